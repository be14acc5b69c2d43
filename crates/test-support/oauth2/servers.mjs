// Real OAuth2 servers on loopback for the tests of `auth.oauth2` (run by
// test_support::OAuth2Servers with node, from the folder where `.ci/run` installed the
// packages with npm).
//
// - oauth2-mock-server: client_credentials, jwt_bearer and refresh_token, with a client
//   check (Basic or form), a token lifetime and faults set through hooks.
// - oidc-provider: token exchange (RFC 8693), added through its registerGrantType; the
//   device flow (RFC 8628) for a public client, with refresh-token rotation, approved by
//   GET /approve?user_code=... on the stats server (what a person does on the page).
// - a GitHub Actions OIDC token stand-in.
//
// Prints one JSON line with the addresses, then serves until stdin closes. Every token
// request is recorded; GET /stats on the stats server answers the record.
import http from 'node:http';
import { OAuth2Server } from 'oauth2-mock-server';
import Provider from 'oidc-provider';

const env = process.env;
const clientId = env.OAUTH_CLIENT_ID ?? 'modelauth';
const clientSecret = env.OAUTH_CLIENT_SECRET ?? 'client-secret-value';
const ttl = Number(env.OAUTH_TOKEN_TTL ?? '3600');
const seen = [];
let fault = 'none';

const claimOf = (jwt, name) => {
  try {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString())[name];
  } catch {
    return undefined;
  }
};

// How the client authenticated: 'basic', 'post' or 'none', and whether it was right.
const clientAuth = (req) => {
  const header = req.headers.authorization ?? '';
  if (header.startsWith('Basic ')) {
    const [id, secret] = Buffer.from(header.slice(6), 'base64').toString().split(':').map(decodeURIComponent);
    return { how: 'basic', ok: id === clientId && secret === clientSecret };
  }
  if (req.body.client_secret !== undefined) {
    return { how: 'post', ok: req.body.client_id === clientId && req.body.client_secret === clientSecret };
  }
  return { how: 'none', ok: true };
};

const mock = new OAuth2Server();
await mock.issuer.keys.generate('RS256');
mock.service.on('beforeTokenSigning', (token, req) => {
  token.payload.exp = Math.floor(Date.now() / 1000) + ttl;
});
mock.service.on('beforeResponse', (response, req) => {
  const body = req.body;
  const auth = clientAuth(req);
  const subject = body.assertion ?? body.subject_token;
  seen.push({
    server: 'mock',
    grant_type: body.grant_type,
    client_auth: auth.how,
    sub: subject ? claimOf(subject, 'sub') : undefined,
    refresh_token: body.refresh_token,
    scope: body.scope,
    audience: body.audience,
    at: Date.now(),
  });
  if (fault === 'echo') {
    response.statusCode = 400;
    response.body = {
      error: 'invalid_grant',
      error_description: `rejected ${new URLSearchParams(body).toString()} with ${req.headers.authorization ?? ''} and ${JSON.stringify(body)}`,
    };
  } else if (fault === 'invalid_grant') {
    response.statusCode = 400;
    response.body = { error: 'invalid_grant', error_description: 'the grant has expired' };
  } else if (!auth.ok) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client', error_description: 'client authentication failed' };
  } else {
    response.body.expires_in = ttl;
  }
});
await mock.start(0, '127.0.0.1');

// oidc-provider with token exchange registered through its extension point.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const DEVICE_CLIENT_ID = env.OAUTH_DEVICE_CLIENT_ID ?? 'modelauth-device';
const oidcServer = http.createServer();
await new Promise((resolve) => oidcServer.listen(0, '127.0.0.1', resolve));
const oidcIssuer = `http://127.0.0.1:${oidcServer.address().port}`;
const oidc = new Provider(oidcIssuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
    redirect_uris: [],
    response_types: [],
  }, {
    client_id: DEVICE_CLIENT_ID,
    token_endpoint_auth_method: 'none',
    grant_types: [DEVICE_CODE, 'refresh_token'],
    redirect_uris: [],
    response_types: [],
  }],
  features: {
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    devInteractions: { enabled: false },
  },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  ttl: { ClientCredentials: ttl, AccessToken: ttl, DeviceCode: 600, Grant: 3600, RefreshToken: 86400 },
});
// Every device-code and refresh-token request, as the token endpoint saw it.
const recordGrant = (ctx, outcome) => {
  const params = ctx.oidc?.params ?? {};
  if (params.grant_type === DEVICE_CODE || params.grant_type === 'refresh_token') {
    seen.push({
      server: 'oidc',
      grant_type: params.grant_type,
      refresh_token: params.refresh_token,
      outcome,
      at: Date.now(),
    });
  }
};
oidc.on('grant.success', (ctx) => recordGrant(ctx, 'success'));
oidc.on('grant.error', (ctx, err) => recordGrant(ctx, err.error ?? 'error'));
oidc.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const params = ctx.oidc.params;
  seen.push({
    server: 'oidc',
    grant_type: TOKEN_EXCHANGE,
    client_auth: 'checked',
    sub: claimOf(params.subject_token, 'sub'),
    subject_token_type: params.subject_token_type,
    audience: params.audience,
    at: Date.now(),
  });
  if (params.subject_token_type !== 'urn:ietf:params:oauth:token-type:jwt' || !claimOf(params.subject_token, 'sub')) {
    ctx.status = 400;
    ctx.body = { error: 'invalid_request', error_description: 'subject_token must be a JWT with a sub' };
    return;
  }
  const token = new ctx.oidc.provider.ClientCredentials({ client: ctx.oidc.client });
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: ttl,
  };
}, ['subject_token', 'subject_token_type', 'audience', 'resource', 'scope', 'requested_token_type']);
oidcServer.on('request', oidc.callback());

// The GitHub Actions token endpoint: a bearer in, {"value": JWT} out.
const ghaBearer = 'gha-request-token';
const stats = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(seen));
  } else if (url.pathname === '/fault') {
    fault = url.searchParams.get('set') ?? 'none';
    res.end('ok');
  } else if (url.pathname === '/approve') {
    // What the person does on the verification page: approve (or deny) the user code.
    const userCode = (url.searchParams.get('user_code') ?? '').toUpperCase().replace(/\W/g, '');
    const code = await oidc.DeviceCode.findByUserCode(userCode);
    if (!code) {
      res.statusCode = 404;
      res.end('no such code');
      return;
    }
    if (url.searchParams.get('deny')) {
      Object.assign(code, { error: 'access_denied', errorDescription: 'the person said no' });
    } else {
      // What the interaction would record: the account, its grant, the accepted scope.
      const scope = code.params.scope ?? 'openid offline_access';
      const grant = new oidc.Grant({ accountId: 'alice', clientId: code.clientId });
      grant.addOIDCScope(scope);
      Object.assign(code, {
        accountId: 'alice',
        authTime: Math.floor(Date.now() / 1000),
        grantId: await grant.save(),
        scope,
        expiresWithSession: false,
      });
    }
    await code.save();
    res.end('ok');
  } else if (url.pathname === '/gha') {
    if (req.headers.authorization !== `Bearer ${ghaBearer}`) {
      res.statusCode = 401;
      res.end('{}');
      return;
    }
    const audience = url.searchParams.get('audience');
    const jwt = await mock.issuer.buildToken({
      scopesOrTransform: (_h, payload) => {
        payload.sub = 'repo:corp/app:ref:refs/heads/main';
        payload.aud = audience;
      },
    });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ value: jwt }));
  } else {
    res.statusCode = 404;
    res.end();
  }
});
await new Promise((resolve) => stats.listen(0, '127.0.0.1', resolve));
const statsUrl = `http://127.0.0.1:${stats.address().port}`;

console.log(JSON.stringify({
  mock: mock.issuer.url.replace('localhost', '127.0.0.1'),
  oidc: oidcIssuer,
  stats: `${statsUrl}/stats`,
  fault: `${statsUrl}/fault`,
  gha_url: `${statsUrl}/gha?api-version=2.0`,
  gha_token: ghaBearer,
  approve: `${statsUrl}/approve`,
  device_client_id: DEVICE_CLIENT_ID,
}));

// Only that one line goes to stdout, which the test stops reading: a notice written later
// would end the process on a broken pipe.
for (const name of ['log', 'info', 'warn', 'error', 'debug']) {
  console[name] = () => {};
}
process.stdout.on('error', () => {});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
