//! A small compiler from a list of system-call rules to a classic-BPF seccomp program.
//!
//! The program it emits has one shape, easy to check by eye:
//!
//! 1. the architecture in `seccomp_data` must be the one the rules were written for, else the
//!    process is killed (a 32-bit `int 0x80` call on x86_64 reports `AUDIT_ARCH_I386` and
//!    would otherwise be matched against the wrong numbers);
//! 2. on x86_64, a number with the x32 bit set kills the process (x32 calls are the same
//!    calls under other numbers);
//! 3. then one block per rule: "is it this call? then decide (maybe after one look at an
//!    argument); else go on to the next block";
//! 4. the default action.
//!
//! Arguments are compared on their low 32 bits, which is exact for every argument the rules
//! look at: they are `int`s or flag words whose meaningful bits are the low ones (the kernel
//! itself truncates `int` arguments), except a pointer tested for NULL, where both halves are
//! compared. Pure code: it only builds instructions, the caller installs them.

/// What the filter does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Let it through.
    Allow,
    /// Fail it with this errno, without reporting.
    Errno(u16),
    /// Raise SIGSYS in the caller (the library's handler reports the call and makes it fail
    /// with `EPERM`; without a handler the process dies of SIGSYS).
    Trap,
    /// Kill the whole process at once.
    Kill,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Kill => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// A test on the low 32 bits of one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Test {
    /// The argument is one of these values.
    OneOf(Vec<u32>),
    /// Every bit of the mask is set.
    AllSet(u32),
    /// No bit of the mask is set.
    NoneSet(u32),
    /// The argument (all 64 bits) is zero: a NULL pointer.
    Null,
}

/// One rule: what to do with one system call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Always this action.
    Always { nr: u32, action: Action },
    /// `then` when argument `arg` passes `test`, `otherwise` when it does not.
    Arg {
        nr: u32,
        arg: u8,
        test: Test,
        then: Action,
        otherwise: Action,
    },
    /// `then` when every `(argument, test)` pair passes, `otherwise` as soon as one fails.
    AllOf {
        nr: u32,
        tests: Vec<(u8, Test)>,
        then: Action,
        otherwise: Action,
    },
}

/// The architecture the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arch {
    /// `AUDIT_ARCH_*` as `seccomp_data.arch` reports it.
    pub audit: u32,
    /// Numbers with these bits set are killed (the x32 bit on x86_64; 0 elsewhere).
    pub forbidden_bits: u32,
}

/// x86_64: `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`), and the
/// x32 bit.
pub(crate) const X86_64: Arch = Arch {
    audit: 0xC000_003E,
    forbidden_bits: 0x4000_0000,
};

/// A filter: rules in order, the first that names a call decides; then `default`.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub arch: Arch,
    pub rules: Vec<Rule>,
    pub default: Action,
}

/// Offsets into `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}
fn arg_high(arg: u8) -> u32 {
    arg_low(arg) + 4
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> libc::sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(action: Action) -> libc::sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action.ret())
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, jt, jf)
}

/// Why a filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompileError {
    /// A rule's block is longer than a BPF conditional jump can skip (255 instructions).
    RuleTooLong,
    /// More than BPF_MAXINSNS (4096) instructions.
    TooLong,
}

impl Filter {
    /// The BPF program.
    pub(crate) fn compile(&self) -> Result<Vec<libc::sock_filter>, CompileError> {
        let mut out = vec![
            load(ARCH),
            jeq(self.arch.audit, 1, 0),
            ret(Action::Kill),
            load(NR),
        ];
        if self.arch.forbidden_bits != 0 {
            out.push(jump(
                libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                self.arch.forbidden_bits,
                0,
                1,
            ));
            out.push(ret(Action::Kill));
        }
        for rule in &self.rules {
            let block = Self::block(rule)?;
            // `block[0]` compares the number; when it differs, skip the rest of the block.
            // The accumulator still holds the number then: blocks load an argument only
            // after the number matched, and every such block ends in a `ret`.
            out.extend(block);
        }
        out.push(ret(self.default));
        if out.len() > 4096 {
            return Err(CompileError::TooLong);
        }
        Ok(out)
    }

    fn block(rule: &Rule) -> Result<Vec<libc::sock_filter>, CompileError> {
        let (nr, body) = match rule {
            Rule::Always { nr, action } => (*nr, vec![ret(*action)]),
            Rule::Arg {
                nr,
                arg,
                test,
                then,
                otherwise,
            } => {
                let mut body = Vec::new();
                match test {
                    Test::OneOf(values) => {
                        // cmp_0 … cmp_{n-1}, ret otherwise, ret then: a match jumps over the
                        // remaining compares and the `ret otherwise`.
                        body.push(load(arg_low(*arg)));
                        let n = values.len();
                        for (i, value) in values.iter().enumerate() {
                            let to_then =
                                u8::try_from(n - i).map_err(|_| CompileError::RuleTooLong)?;
                            body.push(jeq(*value, to_then, 0));
                        }
                        body.push(ret(*otherwise));
                        body.push(ret(*then));
                    }
                    Test::AllSet(mask) => {
                        body.push(load(arg_low(*arg)));
                        body.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, *mask));
                        body.push(jeq(*mask, 0, 1));
                        body.push(ret(*then));
                        body.push(ret(*otherwise));
                    }
                    Test::NoneSet(mask) => {
                        body.push(load(arg_low(*arg)));
                        body.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, *mask));
                        body.push(jeq(0, 0, 1));
                        body.push(ret(*then));
                        body.push(ret(*otherwise));
                    }
                    Test::Null => {
                        body.push(load(arg_low(*arg)));
                        body.push(jeq(0, 0, 3));
                        body.push(load(arg_high(*arg)));
                        body.push(jeq(0, 0, 1));
                        body.push(ret(*then));
                        body.push(ret(*otherwise));
                    }
                }
                (*nr, body)
            }
            Rule::AllOf {
                nr,
                tests,
                then,
                otherwise,
            } => (*nr, Self::all_of(tests, *then, *otherwise)?),
        };
        let skip = u8::try_from(body.len()).map_err(|_| CompileError::RuleTooLong)?;
        let mut block = vec![jeq(nr, 0, skip)];
        block.extend(body);
        Ok(block)
    }
}

impl Filter {
    /// The body of an [`Rule::AllOf`]: each test falls through when it passes and jumps to
    /// the final `ret otherwise` when it fails; after the last, `ret then`.
    fn all_of(
        tests: &[(u8, Test)],
        then: Action,
        otherwise: Action,
    ) -> Result<Vec<libc::sock_filter>, CompileError> {
        let mut body = Vec::new();
        // Indices of the `ja` instructions that must land on `ret otherwise`.
        let mut to_fail = Vec::new();
        for (arg, test) in tests {
            match test {
                Test::OneOf(values) => {
                    body.push(load(arg_low(*arg)));
                    let n = values.len();
                    for (i, value) in values.iter().enumerate() {
                        // A match skips the remaining compares and the `ja`.
                        let past = u8::try_from(n - i).map_err(|_| CompileError::RuleTooLong)?;
                        body.push(jeq(*value, past, 0));
                    }
                }
                Test::AllSet(mask) | Test::NoneSet(mask) => {
                    body.push(load(arg_low(*arg)));
                    body.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, *mask));
                    let wanted = if matches!(test, Test::AllSet(_)) {
                        *mask
                    } else {
                        0
                    };
                    body.push(jeq(wanted, 1, 0));
                }
                Test::Null => {
                    body.push(load(arg_low(*arg)));
                    body.push(jeq(0, 0, 2));
                    body.push(load(arg_high(*arg)));
                    body.push(jeq(0, 1, 0));
                }
            }
            to_fail.push(body.len());
            body.push(stmt(libc::BPF_JMP | libc::BPF_JA, 0));
        }
        body.push(ret(then));
        let fail = body.len();
        body.push(ret(otherwise));
        for at in to_fail {
            body[at].k = (fail - at - 1) as u32;
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    //! A tiny classic-BPF interpreter runs the compiled programs on made-up `seccomp_data`,
    //! so that every jump offset is checked by what it decides.
    use super::*;

    struct Call {
        arch: u32,
        nr: u32,
        args: [u64; 6],
    }

    fn word(call: &Call, offset: u32) -> u32 {
        match offset {
            0 => call.nr,
            4 => call.arch,
            o if o >= 16 => {
                let arg = call.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("unexpected load at {o}"),
        }
    }

    fn run(program: &[libc::sock_filter], call: &Call) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            let code = u32::from(insn.code);
            pc += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                a = word(call, insn.k);
            } else if code == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K {
                a &= insn.k;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return insn.k;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += usize::from(if a == insn.k { insn.jt } else { insn.jf });
            } else if code == libc::BPF_JMP | libc::BPF_JA {
                pc += insn.k as usize;
            } else if code == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K {
                pc += usize::from(if a & insn.k != 0 { insn.jt } else { insn.jf });
            } else {
                panic!("unexpected instruction {code:#x}");
            }
        }
    }

    fn call(nr: u32, args: [u64; 6]) -> Call {
        Call {
            arch: X86_64.audit,
            nr,
            args,
        }
    }

    fn filter() -> Vec<libc::sock_filter> {
        Filter {
            arch: X86_64,
            rules: vec![
                Rule::Always {
                    nr: 1,
                    action: Action::Allow,
                },
                Rule::Always {
                    nr: 2,
                    action: Action::Errno(13),
                },
                Rule::Arg {
                    nr: 3,
                    arg: 0,
                    test: Test::OneOf(vec![0, 77]),
                    then: Action::Allow,
                    otherwise: Action::Trap,
                },
                Rule::Arg {
                    nr: 4,
                    arg: 2,
                    test: Test::AllSet(0x10000),
                    then: Action::Allow,
                    otherwise: Action::Trap,
                },
                Rule::Arg {
                    nr: 6,
                    arg: 0,
                    test: Test::NoneSet(0x30),
                    then: Action::Allow,
                    otherwise: Action::Errno(1),
                },
                Rule::Arg {
                    nr: 5,
                    arg: 1,
                    test: Test::Null,
                    then: Action::Allow,
                    otherwise: Action::Errno(1),
                },
                Rule::AllOf {
                    nr: 7,
                    tests: vec![
                        (0, Test::OneOf(vec![1, 2])),
                        (1, Test::AllSet(0x3)),
                        (2, Test::NoneSet(0x8)),
                        (3, Test::Null),
                    ],
                    then: Action::Allow,
                    otherwise: Action::Trap,
                },
            ],
            default: Action::Trap,
        }
        .compile()
        .unwrap()
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const TRAP: u32 = libc::SECCOMP_RET_TRAP;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    #[test]
    fn unconditional_rules_decide_their_call_and_others_fall_to_the_default() {
        let p = filter();
        assert_eq!(run(&p, &call(1, [0; 6])), ALLOW);
        assert_eq!(run(&p, &call(2, [0; 6])), libc::SECCOMP_RET_ERRNO | 13);
        assert_eq!(run(&p, &call(999, [0; 6])), TRAP);
    }

    #[test]
    fn one_of_matches_every_listed_value_and_nothing_else() {
        let p = filter();
        assert_eq!(run(&p, &call(3, [0, 0, 0, 0, 0, 0])), ALLOW);
        assert_eq!(run(&p, &call(3, [77, 0, 0, 0, 0, 0])), ALLOW);
        assert_eq!(run(&p, &call(3, [78, 0, 0, 0, 0, 0])), TRAP);
    }

    #[test]
    fn all_set_needs_every_bit_of_the_mask() {
        let p = filter();
        assert_eq!(run(&p, &call(4, [0, 0, 0x10011, 0, 0, 0])), ALLOW);
        assert_eq!(run(&p, &call(4, [0, 0, 0x00011, 0, 0, 0])), TRAP);
    }

    #[test]
    fn none_set_refuses_any_bit_of_the_mask() {
        let p = filter();
        assert_eq!(run(&p, &call(6, [0x0f, 0, 0, 0, 0, 0])), ALLOW);
        assert_eq!(run(&p, &call(6, [0x10, 0, 0, 0, 0, 0])), ERRNO_1);
        assert_eq!(run(&p, &call(6, [0x20, 0, 0, 0, 0, 0])), ERRNO_1);
    }

    const ERRNO_1: u32 = libc::SECCOMP_RET_ERRNO | 1;

    #[test]
    fn null_looks_at_both_halves_of_a_pointer() {
        let p = filter();
        assert_eq!(run(&p, &call(5, [9, 0, 0, 0, 0, 0])), ALLOW);
        assert_eq!(
            run(&p, &call(5, [0, 1 << 32, 0, 0, 0, 0])),
            libc::SECCOMP_RET_ERRNO | 1
        );
        assert_eq!(
            run(&p, &call(5, [0, 1, 0, 0, 0, 0])),
            libc::SECCOMP_RET_ERRNO | 1
        );
    }

    #[test]
    fn all_of_allows_only_when_every_argument_passes() {
        let p = filter();
        assert_eq!(run(&p, &call(7, [1, 3, 0, 0, 0, 0])), ALLOW);
        assert_eq!(run(&p, &call(7, [2, 7, 0x7, 0, 0, 0])), ALLOW);
        // Each test failing alone.
        assert_eq!(run(&p, &call(7, [3, 3, 0, 0, 0, 0])), TRAP);
        assert_eq!(run(&p, &call(7, [1, 1, 0, 0, 0, 0])), TRAP);
        assert_eq!(run(&p, &call(7, [1, 3, 0x8, 0, 0, 0])), TRAP);
        assert_eq!(run(&p, &call(7, [1, 3, 0, 1 << 32, 0, 0])), TRAP);
        assert_eq!(run(&p, &call(7, [1, 3, 0, 1, 0, 0])), TRAP);
        // The rules after it still decide their own calls.
        assert_eq!(run(&p, &call(1, [0; 6])), ALLOW);
    }

    #[test]
    fn a_foreign_architecture_or_an_x32_number_is_killed() {
        let p = filter();
        let i386 = Call {
            arch: 0x4000_0003,
            nr: 1,
            args: [0; 6],
        };
        assert_eq!(run(&p, &i386), KILL);
        assert_eq!(run(&p, &call(1 | 0x4000_0000, [0; 6])), KILL);
    }
}
