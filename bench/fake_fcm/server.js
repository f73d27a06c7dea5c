// Fake FCM HTTP v1 + OAuth2 token endpoint over TLS (HTTP/1.1 and h2), for bench/fcm_throughput.py (Node built-ins only).
//
// node server.js --cert CERT.pem --key KEY.pem [--port 0] [--latency-ms 0] [--fail-percent 0]
// Listens on 127.0.0.1 only and prints one JSON line {"port": N} when ready.
//
//   POST /token                              OAuth2 token answer; counts calls
//   POST /v1/projects/{p}/messages:send      {"name": "projects/p/messages/<n>"} after latency-ms;
//                                            fail-percent of tokens (chosen by hash) get 503 + Retry-After: 0
//                                            once, then 200
//   GET  /stats                              counters (requests, tokens, duplicates, TCP connections, CPU;
//                                            sendConnections = connections that carried a messages:send)
//   POST /reset                              zero the counters; optional JSON {"latencyMs", "failPercent"}
'use strict';

const fs = require('fs');
const http2 = require('http2');

function parseArgs(argv) {
  const args = { port: 0, latencyMs: 0, failPercent: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    const value = argv[i + 1];
    if (name === '--cert') args.cert = value;
    else if (name === '--key') args.key = value;
    else if (name === '--port') args.port = Number(value);
    else if (name === '--latency-ms') args.latencyMs = Number(value);
    else if (name === '--fail-percent') args.failPercent = Number(value);
    else throw new Error(`unknown argument ${name}`);
  }
  if (!args.cert || !args.key) throw new Error('--cert and --key are required');
  return args;
}

const config = parseArgs(process.argv.slice(2));
let stats;

function freshStats() {
  return {
    tokenCalls: 0,
    sendRequests: 0,
    delivered: 0,
    unavailable: 0,
    unauthorized: 0,
    badRequests: 0,
    duplicates: 0,
    connections: 0,
    sendConnections: 0,
    inFlight: 0,
    maxInFlight: 0,
    startedCpu: process.cpuUsage(),
    startedAt: process.hrtime.bigint(),
    deliveredTokens: new Set(),
    failedOnce: new Set(),
  };
}
stats = freshStats();

// FNV-1a: a cheap, stable choice of which tokens fail once (independent of how the client names them).
function failsOnce(token) {
  if (config.failPercent <= 0) return false;
  let h = 0x811c9dc5;
  for (let i = 0; i < token.length; i++) {
    h ^= token.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % 10000 < config.failPercent * 100 && !stats.failedOnce.has(token);
}

function answer(res, status, body, headers) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=UTF-8',
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

// The same answer on an HTTP/2 stream of the core API (the compatibility req/res objects cost more CPU than the
// rest of a request, which would make the fake the bottleneck of an HTTP/2 client).
class StreamAnswer {
  constructor(stream) { this.stream = stream; }
  writeHead(status, headers) {
    const out = { ':status': status };
    for (const [name, value] of Object.entries(headers)) out[name.toLowerCase()] = value;
    if (!this.stream.destroyed) this.stream.respond(out);
  }
  end(payload) { if (!this.stream.destroyed) this.stream.end(payload); }
}

function snapshot() {
  const cpu = process.cpuUsage(stats.startedCpu);
  return {
    tokenCalls: stats.tokenCalls,
    sendRequests: stats.sendRequests,
    delivered: stats.delivered,
    unavailable: stats.unavailable,
    unauthorized: stats.unauthorized,
    badRequests: stats.badRequests,
    distinctTokens: stats.deliveredTokens.size,
    duplicates: stats.duplicates,
    connections: stats.connections,
    sendConnections: stats.sendConnections,
    maxInFlight: stats.maxInFlight,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    wallSeconds: Number(process.hrtime.bigint() - stats.startedAt) / 1e9,
    latencyMs: config.latencyMs,
    failPercent: config.failPercent,
  };
}

function reset(body) {
  const wanted = body ? JSON.parse(body) : {};
  if (typeof wanted.latencyMs === 'number') config.latencyMs = wanted.latencyMs;
  if (typeof wanted.failPercent === 'number') config.failPercent = wanted.failPercent;
  stats = freshStats();
}

function send(req, res, body) {
  stats.sendRequests++;
  if (req.connection.fakeFcmEpoch !== stats.startedAt) { // first send on this connection since the reset
    req.connection.fakeFcmEpoch = stats.startedAt;
    stats.sendConnections++;
  }
  if (!(req.headers.authorization || '').startsWith('Bearer fake-access-token-')) {
    stats.unauthorized++;
    return answer(res, 401, { error: { code: 401, message: 'Request had invalid authentication credentials.',
      status: 'UNAUTHENTICATED' } });
  }
  let token;
  try {
    token = JSON.parse(body).message.token;
  } catch (err) {
    token = undefined;
  }
  if (typeof token !== 'string' || !token) {
    stats.badRequests++;
    return answer(res, 400, { error: { code: 400, message: 'The message has no token.', status: 'INVALID_ARGUMENT' } });
  }
  if (failsOnce(token)) {
    stats.failedOnce.add(token);
    stats.unavailable++;
    return answer(res, 503, { error: { code: 503, message: 'The service is currently unavailable.',
      status: 'UNAVAILABLE' } }, { 'Retry-After': '0' });
  }
  if (stats.deliveredTokens.has(token)) stats.duplicates++;
  else stats.deliveredTokens.add(token);
  stats.delivered++;
  const project = req.path.split('/')[3];
  return answer(res, 200, { name: `projects/${project}/messages/${stats.delivered}` });
}

// req: {method, path, headers, connection}; res: writeHead(status, headers) + end(payload).
function route(req, res, body) {
  const path = req.path.split('?')[0];
  if (req.method === 'POST' && path === '/token') {
    stats.tokenCalls++;
    return answer(res, 200, { access_token: `fake-access-token-${stats.tokenCalls}`, expires_in: 3600,
      token_type: 'Bearer' });
  }
  if (req.method === 'POST' && /^\/v1\/projects\/[^/]+\/messages:send$/.test(path)) return send(req, res, body);
  if (req.method === 'GET' && path === '/stats') return answer(res, 200, snapshot());
  if (req.method === 'POST' && path === '/reset') {
    reset(body);
    return answer(res, 200, { ok: true });
  }
  return answer(res, 404, { error: { code: 404, message: 'not found', status: 'NOT_FOUND' } });
}

function serve(source, req, res) {
  const chunks = [];
  source.on('data', (chunk) => chunks.push(chunk));
  source.on('end', () => {
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    const finish = () => {
      stats.inFlight--;
      route(req, res, Buffer.concat(chunks).toString('utf8'));
    };
    const delayed = config.latencyMs > 0 && req.path.includes('/messages:send');
    if (delayed) setTimeout(finish, config.latencyMs);
    else finish();
  });
}

function onHttp1(req, res) {
  serve(req, { method: req.method, path: req.url, headers: req.headers, connection: req.socket }, res);
}

function onStream(stream, headers) {
  const req = { method: headers[':method'], path: headers[':path'], headers, connection: stream.session };
  stream.on('error', () => {}); // a client that reset the stream
  serve(stream, req, new StreamAnswer(stream));
}

// HTTP/1.1 (what aiohttp and requests speak) and HTTP/2 (ALPN h2) on the same port, like fcm.googleapis.com; at most
// 100 concurrent streams per HTTP/2 connection (a common front-end limit), so a client must respect
// SETTINGS_MAX_CONCURRENT_STREAMS to go beyond 100 in flight. A 'request' listener makes Node wrap every HTTP/2
// stream in compatibility objects too, so that wrapper is swapped for the core stream handler.
const tls = { cert: fs.readFileSync(config.cert), key: fs.readFileSync(config.key), allowHTTP1: true,
  settings: { maxConcurrentStreams: 100 } };
const server = http2.createSecureServer(tls);
server.on('request', onHttp1);
server.removeAllListeners('stream');
server.on('stream', onStream);
server.keepAliveTimeout = 120000; // like Google's front ends: idle keep-alive connections stay open
server.headersTimeout = 121000;
server.on('connection', () => { stats.connections++; });
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
