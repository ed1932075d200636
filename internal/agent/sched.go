package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// policyNames names the Linux scheduling policies (sched_setattr(2)).
var policyNames = map[int]string{0: "normal", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}

// threadPolicies reports the scheduling policy of this process's threads:
// one name when they all share it ("batch"), else each with its count
// ("batch 6, normal 1"). It reads /proc, so it shows what the kernel
// applies, not what was asked for.
func threadPolicies() string {
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil || len(stats) == 0 {
		return "unknown"
	}
	counts := map[string]int{}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread ended meanwhile
		}
		counts[statPolicy(string(b))]++
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

// statPolicy returns the policy field (the 41st) of a /proc/<pid>/stat
// line. The command name, field 2, is parenthesised and may hold spaces,
// so fields are counted from its closing parenthesis (field 3 follows it).
func statPolicy(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "unknown"
	}
	fields := strings.Fields(stat[i+1:])
	const policyField = 41 - 3
	if len(fields) <= policyField {
		return "unknown"
	}
	n, err := strconv.Atoi(fields[policyField])
	if err != nil {
		return "unknown"
	}
	return SchedPolicyName(n)
}

// SchedPolicyName names a Linux scheduling policy ("batch"), or gives its
// number when it has no name here.
func SchedPolicyName(policy int) string {
	if name, ok := policyNames[policy]; ok {
		return name
	}
	return strconv.Itoa(policy)
}
