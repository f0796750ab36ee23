// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Reverter
/// @notice Every call and every plain ETH transfer to it reverts with a reason string.
///         Used to produce failed (status 0) transactions in tests.
contract Reverter {
    fallback() external payable {
        revert("Reverter: always reverts");
    }

    receive() external payable {
        revert("Reverter: always reverts");
    }
}
