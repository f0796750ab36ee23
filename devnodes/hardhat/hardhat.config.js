// Hardhat 2 as a dev-stack node (`wallet stack up --node hardhat`): an instamine chain whose funded
// account is the well-known Anvil dev account #0, so the tests use the same funder on every node.
// The stack runs `hardhat node --config <this file> --hostname 127.0.0.1 --port P`.
// Nothing is compiled here: the node never needs (or downloads) a Solidity compiler.
const os = require("os");
const path = require("path");

// Anvil's first default account: its key is public knowledge (test chains only).
const FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

module.exports = {
  networks: {
    hardhat: {
      chainId: Number(process.env.HARDHAT_CHAIN_ID || 31337),
      accounts: [{ privateKey: FUNDER_KEY, balance: "1000000000000000000000000" }], // 1,000,000 ETH
      // Like a real node: a transaction that reverts is still accepted and mined (status 0),
      // instead of eth_sendRawTransaction answering with an error.
      throwOnTransactionFailures: false,
    },
  },
  // Hardhat's working folders go to the stack's folder (or the temp dir), not the repository.
  paths: {
    cache: process.env.HARDHAT_CACHE_DIR || path.join(os.tmpdir(), "wallet-hardhat", "cache"),
    artifacts: process.env.HARDHAT_ARTIFACTS_DIR || path.join(os.tmpdir(), "wallet-hardhat", "artifacts"),
  },
};
