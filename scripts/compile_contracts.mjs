#!/usr/bin/env node
// Compile every contracts/*.sol with solc-js (the npm `solc` package; the compiler is bundled,
// nothing is downloaded) and write one artifact per contract to wallet/contracts/<Name>.json:
//   {contractName, abi, bytecode, deployedBytecode, compiler}
// The artifacts are committed, so the Python runtime never needs a compiler.
//
//   node scripts/compile_contracts.mjs           write / refresh the artifacts
//   node scripts/compile_contracts.mjs --check   exit 1 if any artifact is missing, stale or extra
import { existsSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SRC_DIR = path.join(ROOT, "contracts");
const OUT_DIR = path.join(ROOT, "wallet", "contracts");

// Pinned so the bytecode does not change with the compiler's default and runs on any chain
// (and dev node) from Shanghai on: Ganache 7 stops at Shanghai (no Cancun MCOPY).
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "shanghai",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function usage(code) {
  console.error("usage: node scripts/compile_contracts.mjs [--check]");
  process.exit(code);
}

const args = process.argv.slice(2);
if (args.some((a) => a !== "--check")) usage(2);
const check = args.includes("--check");

const files = readdirSync(SRC_DIR).filter((f) => f.endsWith(".sol")).sort();
if (files.length === 0) {
  console.error(`no .sol files in ${SRC_DIR}`);
  process.exit(1);
}

const sources = {};
for (const f of files) {
  // Source unit names are repo-relative with forward slashes: they are hashed into the metadata
  // (and so into the bytecode), so they must not depend on the machine.
  sources[`contracts/${f}`] = { content: readFileSync(path.join(SRC_DIR, f), "utf8") };
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(
  solc.compile(JSON.stringify(input), {
    import: (p) => ({ error: `imports are not supported (${p}): contracts must be self-contained` }),
  }),
);

let failed = false;
for (const e of output.errors ?? []) {
  const text = e.formattedMessage ?? e.message;
  if (e.severity === "error") {
    failed = true;
    console.error(text);
  } else {
    console.warn(text);
  }
}
if (failed) process.exit(1);

const compiler = solc.version();
const artifacts = new Map();
for (const unit of Object.keys(output.contracts ?? {}).sort()) {
  for (const [name, c] of Object.entries(output.contracts[unit])) {
    if (artifacts.has(name)) {
      console.error(`duplicate contract name ${name} (in ${unit})`);
      process.exit(1);
    }
    const artifact = {
      contractName: name,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      compiler,
    };
    artifacts.set(name, `${JSON.stringify(artifact, null, 2)}\n`);
  }
}

const existing = readdirSync(OUT_DIR).filter((f) => f.endsWith(".json"));
const stale = existing.filter((f) => !artifacts.has(path.basename(f, ".json")));

if (check) {
  const problems = [];
  for (const [name, text] of artifacts) {
    const file = path.join(OUT_DIR, `${name}.json`);
    if (!existsSync(file)) problems.push(`missing: wallet/contracts/${name}.json`);
    else if (readFileSync(file, "utf8") !== text) problems.push(`out of date: wallet/contracts/${name}.json`);
  }
  for (const f of stale) problems.push(`no source for: wallet/contracts/${f}`);
  if (problems.length) {
    for (const p of problems) console.error(p);
    console.error("run: node scripts/compile_contracts.mjs");
    process.exit(1);
  }
  console.log(`ok: ${artifacts.size} artifacts up to date (solc ${compiler})`);
} else {
  for (const [name, text] of artifacts) {
    writeFileSync(path.join(OUT_DIR, `${name}.json`), text);
    console.log(`wrote wallet/contracts/${name}.json`);
  }
  for (const f of stale) {
    unlinkSync(path.join(OUT_DIR, f));
    console.log(`removed stale wallet/contracts/${f}`);
  }
}
