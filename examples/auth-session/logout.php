<?php
// POST (or GET) logout.php: ends the session, on the server and in the
// browser. The cookie a browser (or a thief) kept from before is worthless
// from now on: ws-auth.php finds no session behind it.
require __DIR__ . '/session.php';

header('Content-Type: application/json');
header('Cache-Control: no-store');
if (sent_session_id() !== null) {
    session_start();
    $_SESSION = [];
    // Removes the session's data (its file) on the server.
    session_destroy();
}
// And the cookie in the browser: the same name, path and flags, expired.
$params = session_get_cookie_params();
setcookie(session_name(), '', [
    'expires' => 1,
    'path' => $params['path'],
    'secure' => $params['secure'],
    'httponly' => $params['httponly'],
    'samesite' => $params['samesite'],
]);
echo json_encode(['ok' => true]), "\n";
