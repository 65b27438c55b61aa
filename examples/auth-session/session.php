<?php
// The session settings of login.php, logout.php and ws-auth.php, in one
// place. Included, never served (apache.conf denies it).

// An id the server never issued is not adopted: PHP starts a fresh session
// instead, so nobody can plant a known id in a victim's browser and wait
// for them to log in with it (session fixation).
ini_set('session.use_strict_mode', '1');
// The id travels in the cookie only, never in a URL (where logs, Referer
// headers and shared links would leak it).
ini_set('session.use_only_cookies', '1');
ini_set('session.use_trans_sid', '0');

session_set_cookie_params([
    'lifetime' => 0,
    'path' => '/',
    // Over TLS (terminated here or by nginx in front), the browser sends
    // the cookie over TLS only. X-Forwarded-Proto can be forged, but only
    // to make the sender's own cookie stricter.
    'secure' => !empty($_SERVER['HTTPS'])
        || ($_SERVER['HTTP_X_FORWARDED_PROTO'] ?? '') === 'https',
    // Not readable by JavaScript: an injected script cannot steal it.
    'httponly' => true,
    // Not sent with requests from other sites' pages, a WebSocket they open
    // included (cross-site WebSocket hijacking). Same-site is per
    // registrable domain, so a sibling subdomain still counts as same-site:
    // wspipe --origin closes that.
    'samesite' => 'Lax',
]);

/** The session id the browser sent, if it looks like one PHP issues. */
function sent_session_id(): ?string
{
    $sid = $_COOKIE[session_name()] ?? null;
    return is_string($sid) && preg_match('/\A[A-Za-z0-9,-]{22,256}\z/', $sid) ? $sid : null;
}
