// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title EtherForwarder
/// @notice Passes the attached ETH on to `to` with a plain CALL. The value moves by an
///         internal transaction, which is what internal-transfer (trace) tests need.
contract EtherForwarder {
    event Forwarded(address indexed from, address indexed to, uint256 value);

    error ForwardFailed();

    function forward(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        if (!ok) revert ForwardFailed();
        emit Forwarded(msg.sender, to, msg.value);
    }
}
