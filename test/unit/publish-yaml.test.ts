import { describe, expect, it } from 'vitest';
import { componentIdentity } from '../../src/model/publish-yaml.js';

const FC3 = `Edition: 3.0.0
Type: Component
Name: fc3
Provider:
  - 阿里云
Version: 0.1.0
Description: 阿里云函数计算全生命周期管理
HomePage: https://github.com/devsapp/fc3
Organization: 阿里云函数计算（FC）
Effective: Public
Parameters:
  type: object
  properties:
    Name:
      type: string
    Version: 9.9.9
`;

describe('componentIdentity', () => {
  it('reads the top-level Name and Version of a real publish.yaml, skipping nested keys of the same name', () => {
    expect(componentIdentity(FC3)).toEqual({ name: 'fc3', version: '0.1.0' });
  });

  it.each([
    ['quoted with "', 'Name: "fc3"\nVersion: "0.1.0"\n', { name: 'fc3', version: '0.1.0' }],
    ["quoted with '", "Name: 'fc3'\nVersion: '0.1.0'\n", { name: 'fc3', version: '0.1.0' }],
    ['followed by comments', 'Name: fc3 # the name\nVersion: "0.1.0" # semver\n', { name: 'fc3', version: '0.1.0' }],
    ['in CRLF lines after a BOM', '\uFEFFName: fc3\r\nVersion: 0.1.0\r\n', { name: 'fc3', version: '0.1.0' }],
    ['with spaces around the colon', 'Name :   fc3  \nVersion:\t1.0.0-beta.1+build.5\n', { name: 'fc3', version: '1.0.0-beta.1+build.5' }],
    ['in any order, with a commented-out line', '# Name: old\nVersion: dev.0.56\nName: my_comp.v2\n', { name: 'my_comp.v2', version: 'dev.0.56' }],
  ])('reads values %s', (_, yaml, identity) => {
    expect(componentIdentity(yaml)).toEqual(identity);
  });

  it.each([
    ['no Name', 'Version: 0.1.0\n'],
    ['no Version', 'Name: fc3\n'],
    ['only indented keys', 'Component:\n  Name: fc3\n  Version: 0.1.0\n'],
    ['an empty value', 'Name:\nVersion: 0.1.0\n'],
    ['a value on the next line', 'Name:\n  fc3\nVersion: 0.1.0\n'],
    ['a null name', 'Name: null\nVersion: 0.1.0\n'],
    ['a block scalar', 'Name: |\n  fc3\nVersion: 0.1.0\n'],
    ['a key given twice', 'Name: fc3\nName: fc4\nVersion: 0.1.0\n'],
    ['an unclosed quote', 'Name: "fc3\nVersion: 0.1.0\n'],
    ['text after a closing quote', 'Name: "fc3" x\nVersion: 0.1.0\n'],
    ['a path in the name', 'Name: ../etc\nVersion: 0.1.0\n'],
    ['a slash in the name', 'Name: a/b\nVersion: 0.1.0\n'],
    ['".." in the version', 'Name: fc3\nVersion: 1..2\n'],
    ['a version starting with a dot', 'Name: fc3\nVersion: .1\n'],
    ['a space inside the name', 'Name: f c3\nVersion: 0.1.0\n'],
    ['a name of 129 characters', `Name: ${'a'.repeat(129)}\nVersion: 0.1.0\n`],
    ['lowercase keys', 'name: fc3\nversion: 0.1.0\n'],
    ['no space after the colon', 'Name:fc3\nVersion:0.1.0\n'],
    ['a flow map', '{Name: fc3, Version: 0.1.0}\n'],
    ['a "#" inside the name (part of it, not a comment)', 'Name: c#\nVersion: 1.0.0\n'],
    ['an empty file', ''],
    ['an HTML page', '<html><body>Name: fc3</body></html>'],
  ])('gives undefined for %s', (_, yaml) => {
    expect(componentIdentity(yaml)).toBeUndefined();
  });

  it('accepts a name of 128 characters', () => {
    expect(componentIdentity(`Name: ${'a'.repeat(128)}\nVersion: 1\n`)).toEqual({ name: 'a'.repeat(128), version: '1' });
  });
});
