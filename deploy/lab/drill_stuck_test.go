package lab

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stuckFor is how long drill 6 keeps node3's broker stopped.
const stuckFor = 30 * time.Second

// drillStuckPeer (drill 6, issue 14 §2) stops node3's broker with SIGSTOP for 30 s
// while node1 publishes QoS 1 messages that persistent subscribers on node2 and node3
// both take. node1 must not wait on node3: node2's subscriber gets messages at the rate
// it got them before, node1's agent stays within its memory bound, and once node3's
// broker runs again its subscriber gets everything node1 held for it; what it misses is
// exactly what node1 counted as dropped.
func (l *lab) drillStuckPeer(t *testing.T) {
	ld := l.newLoad("stuck", 5*time.Millisecond)
	defer ld.stop()
	sub2, sub3 := "lab-stuck-sub2", "lab-stuck-sub3"
	ld.addSubscriber(nodeIPs["node2"]+":1883", sub2, 3600)
	ld.addSubscriber(nodeIPs["node3"]+":1883", sub3, 3600)
	ld.addPublisher(nodeIPs["node1"]+":1883", "lab-stuck-pub")
	warm := time.Now()
	waitFor(t, 10*time.Second, "node1→node2 and node1→node3 delivering", func() bool { return ld.flowing(warm) })
	ld.countFrom(warm)
	agent1 := l.proc("agent-node1")
	rssBefore := rssOf(t, agent1.Pid())

	before := time.Now()
	time.Sleep(5 * time.Second)
	stop := time.Now()
	broker3 := l.proc("mosquitto-node3")
	broker3.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			broker3.Signal(syscall.SIGCONT)
		}
	}()
	maxRSS := rssBefore
	for time.Since(stop) < stuckFor {
		time.Sleep(time.Second)
		maxRSS = max(maxRSS, rssOf(t, agent1.Pid()))
	}
	broker3.Signal(syscall.SIGCONT)
	stopped = false
	resumed := time.Now()
	// node1 declares node3 stalled after StallAfter (2 s); until then the
	// broker's in-flight window for node1's data session may hold node2 up.
	stallAfter := 2 * time.Second
	rateBefore := ld.rateTo(sub2, before, stop)
	rateStuck := ld.rateTo(sub2, stop.Add(stallAfter+time.Second), resumed)
	rateFirst := ld.rateTo(sub2, stop, stop.Add(stallAfter+time.Second))
	l.figure(t, "node2_rate_before_per_s", fmt.Sprintf("%.0f", rateBefore))
	l.figure(t, "node2_rate_while_node3_stopped_per_s", fmt.Sprintf("%.0f", rateStuck))
	l.figure(t, "node2_rate_first_3s_per_s", fmt.Sprintf("%.0f", rateFirst))
	if rateStuck < 0.9*rateBefore {
		t.Errorf("node2's subscriber got %.0f msg/s while node3's broker was stopped, %.0f before: want at least 0.9x", rateStuck, rateBefore)
	}
	// The bound: what node1 may hold for node3 (buffer_bytes) over what it used
	// before, plus the Go runtime's slack.
	bound := rssBefore + int64(l.cluster.BufferBytes) + 32<<20
	l.figure(t, "agent1_rss_before_mib", rssBefore>>20)
	l.figure(t, "agent1_rss_max_mib", maxRSS>>20)
	l.figure(t, "agent1_rss_bound_mib", bound>>20)
	if maxRSS > bound {
		t.Errorf("node1's agent reached %d MiB while node3 was stuck, bound %d MiB", maxRSS>>20, bound>>20)
	}

	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	ld.settle(20 * time.Second)
	dropped := l.metricSum(t, "node1", "moha_peer_dropped_messages_total", `peer="node3"`)
	tl := ld.tally()
	missed3 := ld.missedBy(sub3)
	l.figure(t, "acked", tl.acked)
	l.figure(t, "node3_missed", missed3)
	l.figure(t, "node1_dropped_for_node3", dropped)
	l.figure(t, "lost", tl.lostOutage+tl.lostAfter)
	l.figure(t, "duplicated", tl.duplicated)
	if float64(missed3) != dropped {
		t.Errorf("node3's subscriber missed %d messages, node1 counted %v dropped for node3: lost must equal counted", missed3, dropped)
	}
	if missed2 := ld.missedBy(sub2); missed2 != 0 {
		t.Errorf("node2's subscriber missed %d messages", missed2)
	}
}

// rateTo returns how many messages per second sub got of those sent in [from, to).
func (ld *load) rateTo(sub string, from, to time.Time) float64 {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	n := 0
	for pub, seqs := range ld.got[sub] {
		for seq := range seqs {
			if at := ld.sent[pub][seq]; !at.Before(from) && at.Before(to) {
				n++
			}
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

// missedBy counts the acknowledged messages (sent after countFrom) sub never got.
func (ld *load) missedBy(sub string) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	n := 0
	for _, pub := range ld.pubIDs {
		for seq := range ld.acked[pub] {
			if !ld.sent[pub][seq].Before(ld.from) && ld.got[sub][pub][seq] == 0 {
				n++
			}
		}
	}
	return n
}

// rssOf returns a process's resident set size in bytes.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("rss of %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("rss of %d: %q: %v", pid, rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("rss of %d: no VmRSS line", pid)
	return 0
}

// metricSum sums the series of name on node's agent whose labels contain match.
func (l *lab) metricSum(t *testing.T, node, name, match string) float64 {
	t.Helper()
	resp, err := l.httpClient().Get("http://" + nodeIPs[node] + ":9101/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", node, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || (series != name && !strings.HasPrefix(series, name+"{")) || !strings.Contains(series, match) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metrics of %s: %q: %v", node, line, err)
		}
		sum += v
	}
	return sum
}
