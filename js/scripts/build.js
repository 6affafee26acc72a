// Builds the native addon with cargo and copies it next to package.json as
// utility_process.node, where lib/native.js looks for it.
//
//   node scripts/build.js            release build (cargo build --release)
//   node scripts/build.js --debug    debug build
//
// Cargo's target directory is CARGO_TARGET_DIR when set, otherwise the workspace's target/.
'use strict';

const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const debug = process.argv.includes('--debug');
const root = path.resolve(__dirname, '..', '..');
const args = ['build', '-p', 'utility-process-node', '--manifest-path', path.join(root, 'Cargo.toml')];
if (!debug) args.push('--release');
execFileSync(process.env.CARGO || 'cargo', args, { stdio: 'inherit' });

const target = process.env.CARGO_TARGET_DIR
  ? path.resolve(process.env.CARGO_TARGET_DIR)
  : path.join(root, 'target');
const built = path.join(target, debug ? 'debug' : 'release', 'libutility_process_node.so');
const dest = path.join(__dirname, '..', 'utility_process.node');
fs.copyFileSync(built, dest);
console.log(`${path.relative(process.cwd(), built)} -> ${path.relative(process.cwd(), dest)}`);
