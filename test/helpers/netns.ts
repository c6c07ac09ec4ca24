// Network namespaces for multi-node tests: a "switch" namespace with a bridge, and one namespace
// per node joined to it by a veth pair, with addresses the test assigns itself: 10.77.<s>.<n>/24
// and fd77:0:0:<s>::<n>/64, <s> drawn from the pid so that test processes running at once do not
// collide (names carry the pid too). Nothing else is addressed. Needs root and iproute2;
// `NetLab.create` returns a reason string instead where namespaces cannot be made.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

const run = (args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

export interface LabNode {
  ns: string;
  /** Interface name inside the node's namespace (towards the switch). */
  ifname: string;
  /** Switch-side end of the node's veth (cut it to cut the node off). */
  swIf: string;
  ip4: string;
  ip6: string;
}

export class NetLab {
  readonly nodes: LabNode[] = [];
  private extraNs: string[] = [];
  private constructor(readonly tag: string, readonly sw: string, readonly subnet: number) {}

  /** A lab of `n` nodes, or the reason none can be made here. */
  static create(n: number): NetLab | string {
    if (process.platform !== 'linux') return 'network namespaces need Linux';
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root';
    try {
      run(['netns', 'list']);
    } catch (e) {
      return `iproute2 is not usable: ${(e as Error).message.split('\n')[0]}`;
    }
    const tag = `g${process.pid.toString(36)}${Math.floor(Math.random() * 36 * 36).toString(36)}`;
    const lab = new NetLab(tag, `${tag}sw`, 10 + (process.pid % 240));
    try {
      run(['netns', 'add', lab.sw]);
      lab.extraNs.push(lab.sw);
      run(['-n', lab.sw, 'link', 'add', 'br0', 'type', 'bridge']);
      run(['-n', lab.sw, 'link', 'set', 'br0', 'up']);
      for (let i = 0; i < n; i++) lab.addNode();
    } catch (e) {
      lab.destroy();
      return `cannot build namespaces: ${(e as Error).message.split('\n')[0]}`;
    }
    return lab;
  }

  private addNode(): LabNode {
    const i = this.nodes.length;
    const ns = `${this.tag}n${i}`;
    const swIf = `${this.tag}s${i}`;
    const tmp = `${this.tag}t${i}`;
    run(['netns', 'add', ns]);
    this.extraNs.push(ns);
    run(['-n', ns, 'link', 'set', 'lo', 'up']);
    run(['link', 'add', tmp, 'type', 'veth', 'peer', 'name', swIf]);
    run(['link', 'set', swIf, 'netns', this.sw]);
    run(['link', 'set', tmp, 'netns', ns]);
    run(['-n', ns, 'link', 'set', tmp, 'name', 'eth0']);
    run(['-n', this.sw, 'link', 'set', swIf, 'master', 'br0']);
    run(['-n', this.sw, 'link', 'set', swIf, 'up']);
    const ip4 = `10.77.${this.subnet}.${i + 1}`;
    const ip6 = `fd77::${this.subnet.toString(16)}:${i + 1}`;
    run(['-n', ns, 'addr', 'add', `${ip4}/24`, 'dev', 'eth0']);
    // nodad: the address is usable at once (no duplicate address detection wait).
    run(['-n', ns, 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
    run(['-n', ns, 'link', 'set', 'eth0', 'up']);
    const node = { ns, ifname: 'eth0', swIf, ip4, ip6 };
    this.nodes.push(node);
    return node;
  }

  /**
   * Gives node `i` a second interface `eth1` with `addr4`/24 towards a namespace of its own that
   * no other node reaches (a multi-homed machine whose other network is private).
   */
  addPrivateInterface(i: number, addr4: string): void {
    const node = this.nodes[i];
    const other = `${this.tag}p${i}`;
    const a = `${this.tag}x${i}`, b = `${this.tag}y${i}`;
    run(['netns', 'add', other]);
    this.extraNs.push(other);
    run(['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
    run(['link', 'set', a, 'netns', node.ns]);
    run(['link', 'set', b, 'netns', other]);
    run(['-n', node.ns, 'link', 'set', a, 'name', 'eth1']);
    run(['-n', node.ns, 'addr', 'add', `${addr4}/24`, 'dev', 'eth1']);
    run(['-n', node.ns, 'link', 'set', 'eth1', 'up']);
    run(['-n', other, 'link', 'set', b, 'up']);
  }

  /** Cuts node `i` off silently: its switch port goes down, packets vanish, nobody gets a FIN. */
  cut(i: number): void {
    run(['-n', this.sw, 'link', 'set', this.nodes[i].swIf, 'down']);
  }

  restore(i: number): void {
    run(['-n', this.sw, 'link', 'set', this.nodes[i].swIf, 'up']);
  }

  /** Starts `cmd args` inside node `i`'s namespace. */
  spawn(i: number, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.nodes[i].ns, cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Deletes every namespace (their interfaces go with them). Idempotent. */
  destroy(): void {
    for (const ns of this.extraNs.splice(0).reverse()) {
      try {
        run(['netns', 'del', ns]);
      } catch { /* already gone */ }
    }
  }
}
