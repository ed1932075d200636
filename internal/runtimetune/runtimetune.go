// Package runtimetune owns how the agent's process is tuned for forwarding
// beside its broker: the GODEBUG setting it re-executes itself with, its
// GOMAXPROCS, and the Linux scheduling policy of its threads. It applies
// them and reports them as /status shows them. The comments here say why
// each one is there; what each one saves, measured, is in
// docs/ARCHITECTURE.md, "The agent process and the Go runtime".
package runtimetune

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/moha-project/moha/internal/status"
)

// Options are the tuning 'moha agent' takes from its flags.
type Options struct {
	// Procs is GOMAXPROCS for the agent (--procs); 0 keeps the runtime's
	// default, one per core. An explicit GOMAXPROCS environment variable wins.
	Procs int
	// Sched names the scheduling policy of the agent's threads (--sched):
	// "batch" or "normal".
	Sched string
}

// Apply sets GOMAXPROCS and the scheduling policy. It fails only on an
// unknown policy name: a policy the kernel refuses is logged, and the agent
// runs on without it.
func Apply(opts Options, log *slog.Logger) error {
	setProcs(opts.Procs)
	policy, err := parseSchedPolicy(opts.Sched)
	if err != nil {
		return err
	}
	applied, err := applySchedPolicy(policy)
	switch {
	case err != nil:
		// A container may forbid it: the agent works, just costlier.
		log.Warn("cannot set the scheduling policy; running with the default", "sched", opts.Sched, "err", err)
	case applied != policy:
		log.Info("scheduling policy left as the agent was started", "policy", schedPolicyName(applied), "sched", opts.Sched)
	}
	return nil
}

// Report returns the tuning the process runs with, read back from the
// runtime, the environment and the kernel: what is applied, not what was
// asked for.
func Report() status.RuntimeStatus {
	return status.RuntimeStatus{
		GOMAXPROCS:  runtime.GOMAXPROCS(0),
		GODEBUG:     os.Getenv("GODEBUG"),
		SchedPolicy: threadPolicies(),
	}
}

// setProcs sets GOMAXPROCS for the agent unless the environment does. The
// agent's work is a chain of goroutines handing each message on (broker
// reader, forwarder, link writer; link reader, republisher, session writer):
// on one P those handoffs need no cross-thread wakeups, and its broker uses
// one core anyway. A busy agent on a larger host can be given more with
// --procs.
func setProcs(n int) {
	if n > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(n)
	}
}
