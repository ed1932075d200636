package runtimetune

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseSchedPolicy(t *testing.T) {
	for name, want := range map[string]int{"batch": unix.SCHED_BATCH, "normal": unix.SCHED_NORMAL} {
		if got, err := parseSchedPolicy(name); err != nil || got != want {
			t.Errorf("parseSchedPolicy(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "fifo", "BATCH", "idle"} {
		if _, err := parseSchedPolicy(bad); err == nil {
			t.Errorf("parseSchedPolicy(%q) accepted it", bad)
		}
	}
}

func TestSchedPolicyName(t *testing.T) {
	for policy, want := range map[int]string{3: "batch", 0: "normal", 5: "idle", 9: "9"} {
		if got := schedPolicyName(policy); got != want {
			t.Errorf("schedPolicyName(%d) = %q, want %q", policy, got, want)
		}
	}
}

// restoreNormalPolicy puts the test process back under the default policy
// when the test ends.
func restoreNormalPolicy(t *testing.T) {
	t.Cleanup(func() {
		if err := setSchedPolicy(unix.SCHED_NORMAL); err != nil {
			t.Errorf("restore: %v", err)
		}
	})
}

// TestSetSchedPolicy sets the policy on this test process and checks every
// thread, including ones the runtime starts afterwards, then restores it.
func TestSetSchedPolicy(t *testing.T) {
	restoreNormalPolicy(t)
	if err := setSchedPolicy(unix.SCHED_BATCH); err != nil {
		t.Fatal(err)
	}
	// More goroutines locked to their threads than there are threads make
	// the runtime start new ones, which must inherit the policy.
	threads, err := threadAttrs()
	if err != nil {
		t.Fatal(err)
	}
	n := len(threads) + 1
	locked := make(chan struct{})
	release := make(chan struct{})
	done := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked <- struct{}{}
			<-release
			done <- struct{}{}
		}()
	}
	for range n {
		<-locked
	}
	checkThreadPolicies(t, unix.SCHED_BATCH)
	if got := threadPolicies(); got != "batch" {
		t.Errorf("threadPolicies() = %q, want batch", got)
	}
	close(release)
	for range n {
		<-done
	}
}

func checkThreadPolicies(t *testing.T, want int) {
	t.Helper()
	threads, err := threadAttrs()
	if err != nil {
		t.Fatal(err)
	}
	for tid, attr := range threads {
		if int(attr.Policy) != want {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", tid))
			t.Errorf("thread %d (%s) has policy %d, want %d", tid, strings.TrimSpace(string(comm)), attr.Policy, want)
		}
	}
}

// TestApplySchedPolicyKeepsAnOperatorsChoice starts from SCHED_IDLE, as an
// operator's chrt would leave the agent, and checks it is kept.
func TestApplySchedPolicyKeepsAnOperatorsChoice(t *testing.T) {
	restoreNormalPolicy(t)
	if err := setSchedPolicy(unix.SCHED_IDLE); err != nil {
		t.Fatal(err)
	}
	got, err := applySchedPolicy(unix.SCHED_BATCH)
	if err != nil || got != unix.SCHED_IDLE {
		t.Errorf("applySchedPolicy(batch) from idle = %d, %v; want %d (kept)", got, err, unix.SCHED_IDLE)
	}
	checkThreadPolicies(t, unix.SCHED_IDLE)

	// From the default policy it applies.
	if err := setSchedPolicy(unix.SCHED_NORMAL); err != nil {
		t.Fatal(err)
	}
	if got, err := applySchedPolicy(unix.SCHED_BATCH); err != nil || got != unix.SCHED_BATCH {
		t.Errorf("applySchedPolicy(batch) from normal = %d, %v", got, err)
	}
	checkThreadPolicies(t, unix.SCHED_BATCH)
}

// TestThreadPolicies reads this test process's own threads: no test here
// leaves their policy changed, so they all have the calling thread's.
func TestThreadPolicies(t *testing.T) {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := threadPolicies(), schedPolicyName(int(attr.Policy)); got != want {
		t.Errorf("threadPolicies() = %q, want %q", got, want)
	}
}
