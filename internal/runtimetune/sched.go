package runtimetune

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The agent's threads run under SCHED_BATCH by default ('moha agent
// --sched'). The agent shares its host with its broker, and the broker is
// the latency-critical process: every client waits on it, while the agent
// forwards in bursts. A waking SCHED_BATCH thread does not preempt the
// thread running on that CPU (the kernel's wakeup preemption applies to
// SCHED_NORMAL only), so when a broker's write wakes the agent, the broker
// finishes its own loop first and the agent then finds more messages to
// take at once, waking less often for each.

// schedPolicies are the policies --sched accepts; an unprivileged process
// may choose either.
var schedPolicies = map[string]int{
	"batch":  unix.SCHED_BATCH,
	"normal": unix.SCHED_NORMAL,
}

// policyNames names the Linux scheduling policies (sched_setattr(2)).
var policyNames = map[int]string{
	unix.SCHED_NORMAL: "normal", unix.SCHED_FIFO: "fifo", unix.SCHED_RR: "rr",
	unix.SCHED_BATCH: "batch", unix.SCHED_IDLE: "idle", unix.SCHED_DEADLINE: "deadline",
}

// parseSchedPolicy returns the policy --sched names.
func parseSchedPolicy(name string) (int, error) {
	policy, ok := schedPolicies[name]
	if !ok {
		return 0, fmt.Errorf("--sched %q: want batch or normal", name)
	}
	return policy, nil
}

// schedPolicyName names a Linux scheduling policy ("batch"), or gives its
// number when it has no name here.
func schedPolicyName(policy int) string {
	if name, ok := policyNames[policy]; ok {
		return name
	}
	return strconv.Itoa(policy)
}

// applySchedPolicy puts the process under policy unless it was started
// under a policy other than the default ones (an operator's chrt or
// systemd CPUSchedulingPolicy=): that choice is left alone. It returns the
// policy the process runs under.
func applySchedPolicy(policy int) (int, error) {
	started, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return 0, fmt.Errorf("read scheduling policy: %w", err)
	}
	if p := int(started.Policy); p != unix.SCHED_NORMAL && p != unix.SCHED_BATCH {
		return p, nil
	}
	return policy, setSchedPolicy(policy)
}

// setSchedPolicy puts every thread of this process under policy, keeping
// each thread's nice value. Threads started later inherit the policy of the
// thread that creates them, so setting the existing ones is enough; the
// list is reread in case the runtime started one meanwhile.
func setSchedPolicy(policy int) error {
	for range 5 {
		changed, err := setThreadsPolicy(policy)
		if err != nil {
			return err
		}
		if changed == 0 {
			return nil
		}
	}
	return nil
}

// setThreadsPolicy sets policy on each thread that lacks it and reports
// how many it changed.
func setThreadsPolicy(policy int) (int, error) {
	threads, err := threadAttrs()
	if err != nil {
		return 0, err
	}
	changed := 0
	for tid, attr := range threads {
		if int(attr.Policy) == policy {
			continue
		}
		attr.Policy = uint32(policy)
		if err := unix.SchedSetAttr(tid, attr, 0); err != nil && err != unix.ESRCH {
			return changed, fmt.Errorf("set scheduling policy of thread %d: %w", tid, err)
		}
		changed++
	}
	return changed, nil
}

// threadAttrs returns the scheduling attributes of each thread of this
// process, by thread id; a thread that ends meanwhile is left out.
func threadAttrs() (map[int]*unix.SchedAttr, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	threads := make(map[int]*unix.SchedAttr, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // the thread ended
		}
		threads[tid] = attr
	}
	return threads, nil
}

// threadPolicies reports the scheduling policy of this process's threads
// for /status: one name when they all share it ("batch"), else each with
// its count ("batch 6, normal 1"). It asks the kernel, so it shows what is
// applied, not what was asked for.
func threadPolicies() string {
	threads, err := threadAttrs()
	if err != nil || len(threads) == 0 {
		return "unknown"
	}
	counts := map[string]int{}
	for _, attr := range threads {
		counts[schedPolicyName(int(attr.Policy))]++
	}
	if len(counts) == 1 {
		for name := range counts {
			return name
		}
	}
	var parts []string
	for name, n := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
