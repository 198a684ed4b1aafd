// Verifies a Sigstore bundle offline with @sigstore/verify against a PEM public key.
// Usage: node verify.mjs <node_modules dir> <bundle.json> <artifact> <key.pub>
// Exit 0 only when verification succeeds; 1 when it fails; 2 on usage errors.
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const [nodeModules, bundlePath, artifactPath, pubPath] = process.argv.slice(2);
if (!pubPath) {
  console.error('usage: node verify.mjs <node_modules> <bundle.json> <artifact> <key.pub>');
  process.exit(2);
}
let sigstore;
try {
  // ESM ignores NODE_PATH: resolve the packages from the given node_modules directory.
  const require = createRequire(path.join(path.resolve(nodeModules), 'noop.js'));
  sigstore = {
    ...require('@sigstore/bundle'),
    ...require('@sigstore/protobuf-specs'),
    ...require('@sigstore/verify'),
  };
} catch (e) {
  console.error(`cannot load @sigstore packages from ${nodeModules}: ${e.message}`);
  process.exit(2);
}
const { bundleFromJSON, TrustedRoot, Verifier, toSignedEntity, toTrustMaterial } = sigstore;

try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const artifact = fs.readFileSync(artifactPath);
  const publicKey = crypto.createPublicKey(fs.readFileSync(pubPath, 'utf8'));
  const expectedHint = crypto
    .createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  const keyFinder = (hint) => {
    if (hint !== expectedHint) {
      throw new Error(`unknown key hint ${hint} (expected ${expectedHint})`);
    }
    return { publicKey, validFor: () => true };
  };
  const root = TrustedRoot.fromJSON({
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  });
  const tm = toTrustMaterial(root, keyFinder);
  const verifier = new Verifier(tm, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle, artifact));
  console.log('OK: @sigstore/verify accepted the bundle');
  process.exit(0);
} catch (e) {
  console.error(`FAIL: ${e && e.code ? e.code + ': ' : ''}${e && e.message ? e.message : e}`);
  process.exit(1);
}
