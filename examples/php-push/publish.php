<?php
// publish.php: publish the POST body to a wspipe channel from mod_php or
// php-fpm, over HTTP with PHP's curl extension: no process per message
// (push.php beside it execs `wspipe ctl` for each one).
//
//   curl --data 'hello' http://localhost/publish                # WSPIPE_CHANNEL
//   curl --data 'hello' 'http://localhost/publish?channel=/news'
//
// wspipe must take publishes (docs/channels.md):
//   wspipe --pubsub --publish /run/wspipe/publish.sock --publish-mode 660 ...
// The answer is wspipe's own, status and JSON: 200
// {"ok":true,"delivered":N,"dropped":M} (N clients of the channel got it,
// M lost an old message to it), 400 (bad channel, not UTF-8), 401 (the
// token does not match --publish-token), 413 (over --maxframesize). This
// page adds 405 (not a POST), 503 (wspipe cannot be reached), and 500 (its
// settings are wrong), all as {"ok":false,"error":"..."}.
//
// Settings, from the environment (Apache: SetEnv; php-fpm: env[] in the
// pool or fastcgi_param):
//   WSPIPE_PUBLISH   where wspipe --publish listens: unix:/run/wspipe/publish.sock
//                    (the default; a plain /path works too) or http://127.0.0.1:PORT
//   WSPIPE_CHANNEL   the channel when the request names none (?channel=/room)
//   WSPIPE_PUBLISH_TOKEN_FILE  optional: the --publish-token file; its
//                    content is sent as `Authorization: Bearer TOKEN`
//
// The PHP user (www-data) must be able to connect to the socket (write
// permission: wspipe --publish-mode 660 and www-data in wspipe's group, see
// docs/deploy.md) and read the token file.
// Whoever can reach this page can talk to every client of any channel:
// protect it like any admin endpoint.

$endpoint = getenv('WSPIPE_PUBLISH') ?: 'unix:/run/wspipe/publish.sock';
$tokenFile = getenv('WSPIPE_PUBLISH_TOKEN_FILE') ?: '';
// A publish never waits on clients: wspipe answers at once or not at all.
$connectMs = 1000;
$totalMs = 5000;

function reply(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('Cache-Control: no-store');
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
    exit;
}

if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
    header('Allow: POST');
    reply(405, ['ok' => false, 'error' => 'POST the message']);
}
if (!function_exists('curl_init')) {
    reply(500, ['ok' => false, 'error' => "PHP's curl extension is not loaded (apt-get install php-curl)"]);
}

// The channel is a URL path as clients send it: `/` and then characters
// that need no escaping in a URL (or %XX escapes), at most 1024 bytes.
// Checked here so that it goes into the URL below exactly as it is. PHP
// has decoded the query: channel /a%20b (as clients send it) is
// ?channel=/a%2520b.
$channel = $_GET['channel'] ?? (getenv('WSPIPE_CHANNEL') ?: '');
if (!is_string($channel) || strlen($channel) > 1024
    || !preg_match('#^/(?:[A-Za-z0-9._~!$&\'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*$#D', $channel)) {
    reply(400, ['ok' => false, 'error' => 'name a channel: ?channel=/room (a URL path)']);
}

// unix:PATH (or a PATH) is a Unix socket; the URL's host is then unused.
if (str_starts_with($endpoint, 'unix:') || str_starts_with($endpoint, '/')) {
    $socket = str_starts_with($endpoint, 'unix:') ? substr($endpoint, 5) : $endpoint;
    $url = 'http://localhost' . $channel;
} elseif (preg_match('#^https?://[^/?\#]+/?$#D', $endpoint)) {
    $socket = null;
    $url = rtrim($endpoint, '/') . $channel;
} else {
    reply(500, ['ok' => false, 'error' => 'WSPIPE_PUBLISH: expected unix:PATH or http://HOST:PORT']);
}

$headers = [
    // wspipe takes the body as it is; the type is for the logs.
    'Content-Type: application/octet-stream',
    // No `Expect: 100-continue` round trip for larger bodies.
    'Expect:',
];
if ($tokenFile !== '') {
    // Trimmed, as wspipe trims the --publish-token file.
    $token = @file_get_contents($tokenFile);
    if ($token === false || ($token = trim($token)) === '' || preg_match('/[\r\n]/', $token)) {
        reply(500, ['ok' => false, 'error' => 'WSPIPE_PUBLISH_TOKEN_FILE: cannot read a token from it']);
    }
    $headers[] = 'Authorization: Bearer ' . $token;
}

$message = file_get_contents('php://input');
// PHP drops a body over post_max_size (php://input is then empty): do not
// publish an empty message in its place.
if ($message === false || strlen($message) !== (int) ($_SERVER['CONTENT_LENGTH'] ?? strlen($message))) {
    reply(413, ['ok' => false, 'error' => 'the body was not read whole (over post_max_size?)']);
}

$ch = curl_init($url);
curl_setopt_array($ch, [
    CURLOPT_POST => true,
    CURLOPT_POSTFIELDS => $message,
    CURLOPT_HTTPHEADER => $headers,
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_CONNECTTIMEOUT_MS => $connectMs,
    CURLOPT_TIMEOUT_MS => $totalMs,
]);
if ($socket !== null) {
    curl_setopt($ch, CURLOPT_UNIX_SOCKET_PATH, $socket);
}
$answer = curl_exec($ch);
if ($answer === false) {
    // No socket, nobody listening, or no answer in time.
    $error = curl_error($ch);
    error_log("publish.php: $endpoint: $error");
    reply(503, ['ok' => false, 'error' => "wspipe is not reachable at $endpoint: $error"]);
}
$status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
$json = json_decode($answer, true);
if (!is_array($json)) {
    reply(502, ['ok' => false, 'error' => "not a wspipe --publish answer from $endpoint (HTTP $status)"]);
}
// wspipe's answer as it is (its 401 means this page's token is wrong).
http_response_code($status);
header('Content-Type: application/json');
header('Cache-Control: no-store');
echo $answer;
