// Regenerates the RFC 8785 test vectors from ECMAScript itself, the reference
// the RFC is defined against:  node gen_vectors.js
// es_numbers.txt:  <IEEE-754 bits as 16 hex digits> <Number.prototype.toString>
// jcs_vectors.jsonl: [<JSON text, keys in random order>, <its RFC 8785 form>]
'use strict';
const fs = require('fs');

// Deterministic PRNG (xorshift64*), so the files only change on purpose.
let state = 0x2545f4914f6cdd1dn;
function next64() {
  state ^= state >> 12n; state ^= (state << 25n) & 0xffffffffffffffffn; state ^= state >> 27n;
  return (state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn;
}
const rand = (n) => Number(next64() % BigInt(n));

function bitsToDouble(bits) {
  const b = Buffer.alloc(8); b.writeBigUInt64BE(bits); return b.readDoubleBE(0);
}
function doubleToBits(x) {
  const b = Buffer.alloc(8); b.writeDoubleBE(x); return b.readBigUInt64BE(0);
}
const hex = (bits) => bits.toString(16).padStart(16, '0');

// --- numbers ---
const nums = new Set();
const add = (x) => { if (Number.isFinite(x)) nums.add(hex(doubleToBits(x))); };
[0, -0, 5e-324, -5e-324, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53, 2 ** 53 - 1,
 -(2 ** 53), 1e21, 1e21 - 65536, 9.999999999999999e20, 1e20, 1e-6, 1e-7, 0.000001234, 1.234e-7, 0.1, 0.2,
 0.1 + 0.2, 1 / 3, 2 / 3, 4.35, 4.5, 123456789, 1e23, 9.999999999999997e22, 295147905179352830000,
 333333333.3333333, 1.7976931348623157e308, 2.2250738585072014e-308, 2.225073858507201e-308].forEach(add);
for (let e = -330; e <= 310; e++) { add(Number('1e' + e)); add(Number('1.5e' + e)); add(Number('7.0000000000000001e' + e)); }
for (let i = 0; i < 64; i++) { add(2 ** i); add(-(2 ** i) + 1); add(2 ** -i); }
while (nums.size < 4000) {
  const bits = next64();
  const x = bitsToDouble(bits);
  if (Number.isFinite(x)) nums.add(hex(bits));
  const y = rand(2) ? (rand(2 ** 30) - 2 ** 29) / 2 ** rand(40) : rand(2 ** 52) * 10 ** (rand(40) - 20);
  add(y);
}
fs.writeFileSync('es_numbers.txt',
  [...nums].sort().map((h) => `${h} ${String(bitsToDouble(BigInt('0x' + h)))}`).join('\n') + '\n');

// --- whole values ---
const pieces = ['a', 'B', 'z', '\u00e9', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33', '\u0080', '\r', '\n', '\t',
  '"', '\\', '/', '\u0000', '\u001f', '\u007f', '\u2028', '\u2029', '\ue000', '\uffff', '\ud800\udc00', '1', ' ',
  '\u00a0', 'K', '\u212a', 'aa'];
function randString() { let s = ''; const n = rand(6); for (let i = 0; i < n; i++) s += pieces[rand(pieces.length)]; return s; }
function randNumber() {
  switch (rand(4)) {
    case 0: return rand(2 ** 31) - 2 ** 30;
    case 1: return bitsToDouble(next64()) || 0.5;
    case 2: return (rand(2 ** 40) - 2 ** 39) / 2 ** rand(60);
    default: return rand(2 ** 53) * (rand(2) ? 1 : -1);
  }
}
function randValue(depth) {
  switch (rand(depth > 3 ? 5 : 7)) {
    case 0: return null;
    case 1: return rand(2) === 1;
    case 2: { const x = randNumber(); return Number.isFinite(x) ? x : 1; }
    case 3: case 4: return randString();
    case 5: { const a = []; const n = rand(4); for (let i = 0; i < n; i++) a.push(randValue(depth + 1)); return a; }
    default: { const o = {}; const n = rand(5); for (let i = 0; i < n; i++) o[randString()] = randValue(depth + 1); return o; }
  }
}
// The RFC's own reference: JSON.stringify for leaves, keys sorted by UTF-16.
function canonical(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}
function shuffled(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(shuffled).join(', ') + ']';
  const keys = Object.keys(v);
  for (let i = keys.length - 1; i > 0; i--) { const j = rand(i + 1); [keys[i], keys[j]] = [keys[j], keys[i]]; }
  return '{ ' + keys.map((k) => JSON.stringify(k) + ' : ' + shuffled(v[k])).join(' , ') + ' }';
}
const lines = [];
for (let i = 0; i < 500; i++) {
  const v = randValue(0);
  lines.push(JSON.stringify([shuffled(v), canonical(v)]));
}
fs.writeFileSync('jcs_vectors.jsonl', lines.join('\n') + '\n');
