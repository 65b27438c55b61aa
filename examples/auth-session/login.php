<?php
// POST (or GET) login.php with user=NAME: logs NAME in.
//
// DEMO ONLY: anyone may log in as any user below, no password asked. A
// real application checks a password here (password_verify() against the
// stored hash), and takes it by POST only, with a CSRF token.
require __DIR__ . '/session.php';

const DEMO_USERS = [
    'alice' => 'member',
    'bob' => 'member',
    'carol' => 'admin',
];

header('Content-Type: application/json');
header('Cache-Control: no-store');
$user = $_POST['user'] ?? $_GET['user'] ?? null;
if (!is_string($user) || !isset(DEMO_USERS[$user])) {
    http_response_code(403);
    echo json_encode(['ok' => false, 'error' => 'unknown user']), "\n";
    exit;
}
session_start();
// A session the browser already had (a planted one included) gets a new id
// at login, the old one removed: an id known before the login never
// becomes a logged-in session. (Without one, or with an id that named no
// session, session_start() has just made a new one.)
if (session_id() === sent_session_id()) {
    session_regenerate_id(true);
}
$_SESSION['user'] = $user;
$_SESSION['role'] = DEMO_USERS[$user];
session_write_close();
echo json_encode(['ok' => true, 'user' => $user, 'role' => DEMO_USERS[$user]]), "\n";
