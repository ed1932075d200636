package runtimetune

import (
	"os"
	"strings"
	"syscall"
)

// SysmonSetting is the GODEBUG setting the agent re-executes itself with.
// It keeps the Go runtime's system monitor (sysmon) polling instead of
// sleeping until the next system call wakes it. A forwarding
// agent alternates between short bursts of work and idle gaps of tens of
// microseconds: in each gap sysmon went to sleep, and the first read or
// write after it paid a futex wake-up and a thread switch. schedtrace is
// the runtime's only switch that keeps sysmon polling (runtime/proc.go,
// sysmon): a scheduler summary line every 2^31 ms (24.8 days) is its price.
const SysmonSetting = "schedtrace=2147483647"

// reexecEnv returns the environment the agent re-executes itself with, and
// false when it needs none: the setting is there, or GODEBUG names
// schedtrace already (an operator's choice, e.g. schedtrace=0 to opt out).
func reexecEnv(environ []string) ([]string, bool) {
	for i, kv := range environ {
		value, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		if strings.Contains(value, "schedtrace=") {
			return nil, false
		}
		env := append([]string(nil), environ...)
		if value == "" {
			env[i] = "GODEBUG=" + SysmonSetting
		} else {
			env[i] = kv + "," + SysmonSetting
		}
		return env, true
	}
	return append(append([]string(nil), environ...), "GODEBUG="+SysmonSetting), true
}

// Reexec replaces this process (same pid) with itself, run with args,
// under SysmonSetting, which the runtime reads only at start: call it first
// thing in main, and for the agent only. It returns only if it did not: the
// setting is already there, or the exec failed, in which case the agent
// runs as it is (correct, just costlier).
func Reexec(args []string) {
	env, needed := reexecEnv(os.Environ())
	if !needed {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, args, env)
}
