<?php
// push.php: server-side push into wspipe from PHP; the same contract as
// push.cgi beside it.
//
//   curl --data 'hello everyone' http://localhost/push.php
//
// The POST body becomes one WebSocket message for every client connected to
// wspipe, through `wspipe ctl broadcast -` on wspipe's control socket.
// Answers 200 with {"ok":true,"delivered":N}, or an error status with
// {"ok":false,"error":"..."}.
//
// The PHP user (www-data for mod_php and php-fpm on Debian) must be able to
// connect to the socket: wspipe --control-mode 660 and www-data in wspipe's
// group (docs/deploy.md). Whoever can reach this script can talk to every
// client: protect it like any admin endpoint.
//
// From your own PHP code, the heart of it is:
//
//   exec(escapeshellarg($bin) . ' ctl --socket ' . escapeshellarg($socket)
//        . ' broadcast ' . escapeshellarg($message) . ' 2>&1', $out, $status);
//
// (escapeshellarg() quotes each argument for /bin/sh). That puts the
// message on the command line, which is fine for short messages, but a
// message that is exactly "-" would be read from stdin instead, and very
// long ones hit the argument size limit. Below, the message goes through
// stdin, which has neither problem.

$socket = getenv('WSPIPE_SOCKET') ?: '/run/wspipe/control.sock';
$bin = getenv('WSPIPE_BIN') ?: 'wspipe';
$path = getenv('WSPIPE_PATH') ?: '';
$max = 65536;

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

$message = file_get_contents('php://input', false, null, 0, $max + 1);
if ($message === false) {
    reply(400, ['ok' => false, 'error' => 'cannot read the request body']);
}
if (strlen($message) > $max) {
    reply(413, ['ok' => false, 'error' => "message larger than $max bytes"]);
}

// escapeshellarg() on every piece of the command line: the shell sees
// plain words whatever the settings contain. "-" reads the message from
// stdin (one trailing newline is dropped).
$command = escapeshellarg($bin) . ' ctl --socket ' . escapeshellarg($socket) . ' broadcast';
if ($path !== '') {
    $command .= ' --path ' . escapeshellarg($path);
}
$command .= ' -';

$process = proc_open($command, [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
if (!is_resource($process)) {
    reply(500, ['ok' => false, 'error' => 'cannot run wspipe']);
}
fwrite($pipes[0], $message);
fclose($pipes[0]);
$out = stream_get_contents($pipes[1]);
$error = trim(stream_get_contents($pipes[2]));
fclose($pipes[1]);
fclose($pipes[2]);
$status = proc_close($process);
if ($error !== '') {
    error_log("push.php: $error");
}

// `wspipe ctl` prints "delivered to N client(s)"; exit codes: 0 done,
// 1 some clients did not take the message in time, 2 bad request (e.g. not
// UTF-8), 3 no server at the socket.
$delivered = preg_match('/^delivered to (\d+) client/m', $out, $m) ? (int) $m[1] : 0;
switch ($status) {
    case 0:
        reply(200, ['ok' => true, 'delivered' => $delivered]);
    case 1:
        // Delivered, but some clients were too slow to take it: not worth
        // a retry (the others would get the message twice).
        reply(200, ['ok' => true, 'delivered' => $delivered, 'warning' => $error]);
    case 2:
        reply(400, ['ok' => false, 'error' => $error]);
    case 3:
        reply(503, ['ok' => false, 'error' => $error]);
    default:
        reply(500, ['ok' => false, 'error' => $error]);
}
