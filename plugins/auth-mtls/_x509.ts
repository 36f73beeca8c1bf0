/**
 * @module
 * @peculiar/x509, loaded the one safe way: after `reflect-metadata`, which its tsyringe dependency
 * checks for at load time, and with Node's WebCrypto as its provider. Import x509 from here only.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };
