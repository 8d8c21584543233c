import { before, describe } from 'node:test';
import { describeWriteApi } from '../admin/write-behaviour.ts';
import { makeHarness as etcdHarness } from './harness/etcd.ts';
import { makeHarness as redisHarness, makeKeyspaceHarness } from './harness/redis.ts';
import { SQL_VARIANTS, makeHarness as sqlHarness } from './harness/sql.ts';
import { makeHarness as zookeeperHarness } from './harness/zookeeper.ts';
import { requireServers } from '../support/servers.ts';

/** The admin write API against the real servers (the file, Consul and Kubernetes runs are in test/admin/route-write.test.ts). */
describe('real servers', () => {
  before(() => requireServers('etcd', 'redis', 'zookeeper', 'postgres', 'mariadb'));
  describeWriteApi('etcd', etcdHarness);
  describeWriteApi('redis (pub/sub)', redisHarness);
  describeWriteApi('redis (keyspace notifications)', makeKeyspaceHarness);
  describeWriteApi('zookeeper', zookeeperHarness);
  describeWriteApi('postgres (incremental, NOTIFY)', () => sqlHarness(SQL_VARIANTS['postgres-incremental-notify']));
  describeWriteApi('postgres (full)', () => sqlHarness(SQL_VARIANTS['postgres-full']));
  describeWriteApi('mariadb (incremental, soft delete)', () => sqlHarness(SQL_VARIANTS['mysql-incremental']));
});
