// What `require('electron')` gives a worker run through lib/bootstrap.cjs: the part of
// Electron's `electron` module that a utility process has and this package provides.
'use strict';

const { MessageChannelMain, MessagePortMain } = require('./index');

module.exports = { MessageChannelMain, MessagePortMain };
