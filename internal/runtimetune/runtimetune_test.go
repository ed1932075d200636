package runtimetune

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestApplyRejectsAnUnknownSched(t *testing.T) {
	err := Apply(Options{Sched: "fifo"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), `--sched "fifo"`) {
		t.Errorf("Apply(sched fifo) = %v, want an error naming --sched", err)
	}
}

// TestApplySchedLogsAKeptPolicy starts from SCHED_IDLE, as an operator's
// chrt would leave the agent: Apply keeps it and says so.
func TestApplySchedLogsAKeptPolicy(t *testing.T) {
	restoreNormalPolicy(t)
	if err := setSchedPolicy(unix.SCHED_IDLE); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if err := Apply(Options{Sched: "batch"}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if want := `msg="scheduling policy left as the agent was started" policy=idle sched=batch`; !strings.Contains(logs.String(), want) {
		t.Errorf("log = %q, want %q", logs.String(), want)
	}
	checkThreadPolicies(t, unix.SCHED_IDLE)
}

func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	t.Setenv("GOMAXPROCS", "")
	setProcs(1)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("after setProcs(1): GOMAXPROCS %d", got)
	}
	setProcs(0)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("setProcs(0) changed GOMAXPROCS to %d", got)
	}
	t.Setenv("GOMAXPROCS", "3")
	setProcs(2)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("setProcs(2) under GOMAXPROCS=3 in the environment changed it to %d", got)
	}
}

func TestRuntimeReport(t *testing.T) {
	got := Report()
	if got.GOMAXPROCS != runtime.GOMAXPROCS(0) || got.GODEBUG != os.Getenv("GODEBUG") || got.SchedPolicy != threadPolicies() {
		t.Errorf("Report() = %+v, want GOMAXPROCS %d, GODEBUG %q, policy %q",
			got, runtime.GOMAXPROCS(0), os.Getenv("GODEBUG"), threadPolicies())
	}
}
