/**
 * @module
 * PKCS#12 export with node-forge's primitives. forge's own `toPkcs12Asn1` only wraps RSA keys, so the
 * bags are assembled here around any PKCS#8 key (EC or RSA) with the algorithms OpenSSL 3 uses by
 * default: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key and an HMAC-SHA256 MAC (RFC 7292).
 */
import forge from 'node-forge';

const { asn1, pki } = forge;

/** PBKDF2 and MAC iterations; OpenSSL 3's default. forge encodes counts below 65536 only. */
const ITERATIONS = 2048;

function seq(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}

function oid(id: string): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(id).getBytes());
}

function octets(bytes: string): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
}

function explicit0(inner: forge.asn1.Asn1): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
}

function binary(bytes: Uint8Array): string {
  return forge.util.binary.raw.encode(bytes);
}

/** A PKCS#7 `data` ContentInfo holding DER bytes. */
function dataContent(der: string): forge.asn1.Asn1 {
  return seq([oid(pki.oids.data!), explicit0(octets(der))]);
}

/** The bag attributes pairing a key with its certificate (localKeyId = SHA-1 of the leaf DER). */
function bagAttributes(localKeyId: string, friendlyName: string): forge.asn1.Asn1 {
  const attr = (id: string, value: forge.asn1.Asn1) =>
    seq([oid(id), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [value])]);
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, [
    attr(pki.oids.localKeyId!, octets(localKeyId)),
    attr(pki.oids.friendlyName!, asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, friendlyName)),
  ]);
}

/**
 * A password-protected PKCS#12 file (DER) holding the key, its certificate and the chain after it.
 * `keyDer` is PKCS#8; `certsDer[0]` is the key's certificate.
 */
export function pkcs12(
  keyDer: Uint8Array,
  certsDer: Uint8Array[],
  options: { password: string; friendlyName: string },
): Uint8Array {
  const leaf = certsDer[0];
  if (!leaf) throw new Error('A PKCS#12 file needs the key certificate');
  const sha1 = forge.md.sha1.create();
  sha1.update(binary(leaf));
  const attrs = bagAttributes(sha1.digest().getBytes(), options.friendlyName);

  const certBags = certsDer.map((der, i) =>
    seq([
      oid(pki.oids.certBag!),
      explicit0(seq([oid(pki.oids.x509Certificate!), explicit0(octets(binary(der)))])),
      ...(i === 0 ? [attrs] : []),
    ]),
  );
  const encryptedKey = pki.encryptPrivateKeyInfo(asn1.fromDer(binary(keyDer)), options.password, {
    algorithm: 'aes256',
    count: ITERATIONS,
    saltSize: 16,
    prfAlgorithm: 'sha256',
  });
  const keyBag = seq([oid(pki.oids.pkcs8ShroudedKeyBag!), explicit0(encryptedKey), attrs]);

  const safe = seq([
    dataContent(asn1.toDer(seq(certBags)).getBytes()),
    dataContent(asn1.toDer(seq([keyBag])).getBytes()),
  ]);
  const safeDer = asn1.toDer(safe).getBytes();

  // RFC 7292 appendix B: the MAC key comes from the PKCS#12 KDF with ID 3, as long as the digest.
  const macSalt = forge.random.getBytesSync(16);
  const macKey = forge.pkcs12.generateKey(
    options.password,
    forge.util.createBuffer(macSalt),
    3,
    ITERATIONS,
    32,
    forge.md.sha256.create(),
  );
  const hmac = forge.hmac.create();
  hmac.start('sha256', macKey.getBytes());
  hmac.update(safeDer);
  const macData = seq([
    seq([
      seq([oid(pki.oids.sha256!), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]),
      octets(hmac.digest().getBytes()),
    ]),
    octets(macSalt),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(ITERATIONS).getBytes()),
  ]);

  const pfx = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()),
    dataContent(safeDer),
    macData,
  ]);
  return forge.util.binary.raw.decode(asn1.toDer(pfx).getBytes());
}
