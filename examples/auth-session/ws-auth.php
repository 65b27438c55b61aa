<?php
// wspipe --auth-url http://127.0.0.1:PORT/ws-auth.php: asked before every
// WebSocket upgrade, with the browser's headers (its Cookie among them).
//   204 + Wspipe-* headers: admitted, as this user, to these channels;
//   401: no logged-in session.
// Reachable from loopback only (apache.conf; nginx.conf does not pass it).
require __DIR__ . '/session.php';

function refuse(): never
{
    // Nothing of a session PHP might have started goes back.
    header_remove('Set-Cookie');
    http_response_code(401);
    exit;
}

$sid = sent_session_id();
// No cookie: refused before session_start(), which would create a session
// (a file) for every stranger that knocks.
if ($sid === null) {
    refuse();
}
session_start();
$user = $_SESSION['user'] ?? null;
$role = $_SESSION['role'] ?? 'member';
if (session_id() !== $sid) {
    // The id named no session (logged out, expired, forged): strict mode
    // began a new, empty one, whose file now exists. Remove it.
    session_destroy();
    refuse();
}
// Done with the session: release its lock at once. The files handler locks
// a session for as long as it is open, and the user's other requests (a
// page loading beside the WebSocket) wait for it meanwhile.
session_write_close();
if (!is_string($user) || $user === '') {
    refuse();
}

// The channels are the URL paths wspipe sees. nginx.conf and apache.conf
// pass /ws/chat/1 to wspipe as /chat/1 (the /ws prefix is stripped), so
// these name /chat/..., not /ws/chat/...
$channels = ['/chat/*'];
if ($role === 'admin') {
    $channels[] = '/admin';
}
// login.php allows only [a-z0-9_] names, so the values need no escaping.
header('Wspipe-Env-Remote-User: ' . $user);
header('Wspipe-Env-Role: ' . $role);
header('Wspipe-Channels: ' . implode(', ', $channels));
http_response_code(204);
