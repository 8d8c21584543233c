#!/usr/bin/env node
// Entry point for the installed `dynamic-lb` command: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';
register();
await import('../cmd/dynamic-lb.ts');
