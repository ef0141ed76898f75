// The chart library the gateway compiles in is exactly the pinned npm package.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VENDORED } from './vendor.mjs';

test('the vendored chart library is the pinned one (npm run vendor)', () => {
  for (const [from, to] of VENDORED) {
    assert.ok(readFileSync(from).equals(readFileSync(to)), `${to} differs from ${from}`);
  }
});
