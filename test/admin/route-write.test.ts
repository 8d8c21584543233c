import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { makeHarness as fileHarness } from '../sources/harness/file.ts';
import { makeHarness as etcdHarness } from '../sources/harness/etcd.ts';
import { makeHarness as redisHarness, makeKeyspaceHarness } from '../sources/harness/redis.ts';
import { requireServers } from '../support/servers.ts';
import { describeWriteApi } from './write-behaviour.ts';

describeWriteApi('file', fileHarness);
describe('real servers', () => {
  before(() => requireServers('etcd', 'redis'));
  describeWriteApi('etcd', etcdHarness);
  describeWriteApi('redis (pub/sub)', redisHarness);
  describeWriteApi('redis (keyspace notifications)', makeKeyspaceHarness);
});
void assert;
void after;
void test;
