// A certified OpenID Connect provider (panva's oidc-provider) for the end-to-end tests, on
// 127.0.0.1:PORT with the clients the test names and its development interactions, which a
// plain HTTP client can drive: log in as any account id, then consent.
//
// Its accounts are the test's: OIDC_ACCOUNTS maps each login (the subject) to the claims the
// provider asserts for it, `{"alice": {"email": "alice@example.com", "email_verified": true}}`.
//
// Usage: OIDC_PORT=… OIDC_PROVIDER_MODULE=/path/to/node_modules/oidc-provider/lib/index.js \
//        OIDC_CLIENTS='[{"client_id":…,"client_secret":…,"redirect_uris":[…]}]' \
//        OIDC_ACCOUNTS='{…}' node provider.mjs
import { generateKeyPairSync } from 'node:crypto';

const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE);
const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.OIDC_CLIENTS);
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const key = { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys: [key] },
  cookies: { keys: ['emporium-test-cookies'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    if (!(id in accounts)) {
      return undefined;
    }
    return { accountId: id, async claims() { return { sub: id, name: `Test ${id}`, ...accounts[id] }; } };
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer }));
});
