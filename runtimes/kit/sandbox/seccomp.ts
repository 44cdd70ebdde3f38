/**
 * The seccomp filter every sandboxed process runs under, as a classic BPF program (what `bwrap --seccomp FD` reads:
 * an array of `struct sock_filter`, 8 bytes each, native byte order).
 *
 * It refuses, with EPERM, the system calls a process in a session has no business making and that have been the way
 * out of containers before: debugging another process (ptrace, process_vm_*), mounting (the old and the new mount
 * API), the kernel keyring (keyctl and friends: a keyring can outlive the sandbox and is shared per uid), new
 * namespaces (unshare, setns, and clone with a namespace flag: a user namespace inside would hand back capabilities
 * over its own objects), loading kernel code (modules, kexec, bpf), the kernel's larger attack surfaces
 * (perf_event_open, userfaultfd, io_uring) and the rest that only root may use anyway. Everything else is allowed:
 * this is a deny list on top of namespaces, no capabilities and no_new_privs, not the isolation itself.
 *
 * clone3 answers ENOSYS instead: its flags sit in a struct the filter cannot read, and ENOSYS makes glibc and every
 * runtime we run fall back to clone, whose flags the filter checks. A system call made through another ABI (32-bit
 * x86 on an x86_64 kernel, x32) is refused outright, since its numbers differ and the list would not apply.
 *
 * Tested on x86_64 (test/sandbox.test.ts runs the refused calls for real). The aarch64 table is taken from the
 * kernel's asm-generic numbering and checked against this machine's headers in the same test; it has not been run on
 * an aarch64 kernel.
 */

export type SeccompArch = 'x64' | 'arm64';

/** What the filter refuses, by name; each name's number per architecture (absent: no such call there). */
const REFUSED: Readonly<Record<string, { x64?: number; arm64?: number }>> = {
  // another process's memory and registers
  ptrace: { x64: 101, arm64: 117 },
  process_vm_readv: { x64: 310, arm64: 270 },
  process_vm_writev: { x64: 311, arm64: 271 },
  pidfd_getfd: { x64: 438, arm64: 438 },
  process_madvise: { x64: 440, arm64: 440 },
  // mounts, old and new API
  mount: { x64: 165, arm64: 40 },
  umount2: { x64: 166, arm64: 39 },
  pivot_root: { x64: 155, arm64: 41 },
  open_tree: { x64: 428, arm64: 428 },
  move_mount: { x64: 429, arm64: 429 },
  fsopen: { x64: 430, arm64: 430 },
  fsconfig: { x64: 431, arm64: 431 },
  fsmount: { x64: 432, arm64: 432 },
  fspick: { x64: 433, arm64: 433 },
  mount_setattr: { x64: 442, arm64: 442 },
  // the kernel keyring
  keyctl: { x64: 250, arm64: 219 },
  add_key: { x64: 248, arm64: 217 },
  request_key: { x64: 249, arm64: 218 },
  // namespaces (clone's namespace flags are checked below)
  unshare: { x64: 272, arm64: 97 },
  setns: { x64: 308, arm64: 268 },
  // kernel code and the larger kernel attack surfaces
  bpf: { x64: 321, arm64: 280 },
  perf_event_open: { x64: 298, arm64: 241 },
  userfaultfd: { x64: 323, arm64: 282 },
  io_uring_setup: { x64: 425, arm64: 425 },
  io_uring_enter: { x64: 426, arm64: 426 },
  io_uring_register: { x64: 427, arm64: 427 },
  init_module: { x64: 175, arm64: 105 },
  finit_module: { x64: 313, arm64: 273 },
  delete_module: { x64: 176, arm64: 106 },
  kexec_load: { x64: 246, arm64: 104 },
  kexec_file_load: { x64: 320, arm64: 294 },
  // root's business (refused without capabilities anyway; refused here whatever happens to capabilities)
  open_by_handle_at: { x64: 304, arm64: 265 },
  name_to_handle_at: { x64: 303, arm64: 264 },
  acct: { x64: 163, arm64: 89 },
  swapon: { x64: 167, arm64: 224 },
  swapoff: { x64: 168, arm64: 225 },
  reboot: { x64: 169, arm64: 142 },
  syslog: { x64: 103, arm64: 116 },
  quotactl: { x64: 179, arm64: 60 },
  quotactl_fd: { x64: 443, arm64: 443 },
  lookup_dcookie: { x64: 212, arm64: 18 },
  iopl: { x64: 172 },
  ioperm: { x64: 173 },
};

/** The names of the refused calls (clone with a namespace flag and clone3 besides). */
export const REFUSED_SYSCALLS: readonly string[] = Object.keys(REFUSED);

/** The refused calls' numbers on one architecture, by name (the test compares them with the kernel headers). */
export function refusedNumbers(arch: SeccompArch): Record<string, number> {
  return Object.fromEntries(Object.entries(REFUSED).flatMap(([name, nr]) => (nr[arch] === undefined ? [] : [[name, nr[arch]]])));
}

const CLONE = { x64: 56, arm64: 220 } as const;
const CLONE3 = { x64: 435, arm64: 435 } as const;
/** CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET */
const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;
/** AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64 (linux/audit.h) */
const AUDIT_ARCH = { x64: 0xc000003e, arm64: 0xc00000b7 } as const;
/** x32 system calls on x86_64 carry this bit (__X32_SYSCALL_BIT) */
const X32_SYSCALL_BIT = 0x40000000;

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16; // both architectures are little-endian: the low half of args[0] comes first

// classic BPF opcodes (linux/bpf_common.h)
const LD_W_ABS = 0x00 | 0x00 | 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K = 0x05 | 0x10 | 0x00; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K = 0x05 | 0x30 | 0x00; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K = 0x05 | 0x40 | 0x00; // BPF_JMP | BPF_JSET | BPF_K
const RET_K = 0x06 | 0x00; // BPF_RET | BPF_K

const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;

type Label = 'allow' | 'eperm' | 'enosys' | 'next';
type Insn = { code: number; k: number; jt?: Label; jf?: Label };

/** The architecture this process runs on, or null when the sandbox has no filter for it. */
export function hostSeccompArch(): SeccompArch | null {
  return process.arch === 'x64' || process.arch === 'arm64' ? process.arch : null;
}

/** The filter for one architecture, ready for `bwrap --seccomp FD`. */
export function seccompFilter(arch: SeccompArch): Buffer {
  const body: Insn[] = [
    { code: LD_W_ABS, k: OFFSET_ARCH },
    { code: JEQ_K, k: AUDIT_ARCH[arch], jt: 'next', jf: 'eperm' },
    { code: LD_W_ABS, k: OFFSET_NR },
    ...(arch === 'x64' ? [{ code: JGE_K, k: X32_SYSCALL_BIT, jt: 'eperm', jf: 'next' } as Insn] : []),
    ...Object.values(refusedNumbers(arch)).map((nr): Insn => ({ code: JEQ_K, k: nr, jt: 'eperm', jf: 'next' })),
    { code: JEQ_K, k: CLONE3[arch], jt: 'enosys', jf: 'next' },
    { code: JEQ_K, k: CLONE[arch], jt: 'next', jf: 'allow' },
    { code: LD_W_ABS, k: OFFSET_ARG0_LOW },
    { code: JSET_K, k: CLONE_NAMESPACE_FLAGS, jt: 'eperm', jf: 'allow' },
  ];
  const tail: Array<[Label, number]> = [
    ['allow', SECCOMP_RET_ALLOW],
    ['eperm', SECCOMP_RET_ERRNO | EPERM],
    ['enosys', SECCOMP_RET_ERRNO | ENOSYS],
  ];
  const at = new Map<Label, number>(tail.map(([label], i) => [label, body.length + i]));
  const program = Buffer.alloc((body.length + tail.length) * 8);
  const jump = (from: number, to: Label | undefined): number => {
    if (to === undefined || to === 'next') return 0;
    const offset = at.get(to)! - from - 1;
    if (offset > 255) throw new Error('seccomp filter too long for a classic BPF jump');
    return offset;
  };
  body.forEach((insn, i) => {
    program.writeUInt16LE(insn.code, i * 8);
    program.writeUInt8(jump(i, insn.jt), i * 8 + 2);
    program.writeUInt8(jump(i, insn.jf), i * 8 + 3);
    program.writeUInt32LE(insn.k >>> 0, i * 8 + 4);
  });
  tail.forEach(([, value], i) => {
    const offset = (body.length + i) * 8;
    program.writeUInt16LE(RET_K, offset);
    program.writeUInt32LE(value >>> 0, offset + 4);
  });
  return program;
}
