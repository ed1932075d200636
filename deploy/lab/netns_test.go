package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/render"
)

// setnsSyscall is setns(2)'s number: package syscall does not name it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// dial opens a TCP connection from the client namespace. The test process stays in
// the root namespace; a socket keeps the namespace it was created in.
func (l *lab) dial(addr string, timeout time.Duration) (net.Conn, error) {
	return l.dialFrom("client", addr, timeout)
}

// dialFrom dials addr from namespace ns on a goroutine locked to its thread, which
// joins ns for the dial and returns to the original namespace after. If it cannot
// return, the thread stays locked so Go discards it rather than reuse it elsewhere.
// (Always discarding would be simpler, but the thread may be the main one, which Go
// never discards: it would stay in the lab's namespace for good.)
func (l *lab) dialFrom(ns, addr string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, err, back := dialInNamespace(filepath.Join("/run/netns", l.ns(ns)), addr, timeout)
		if back {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.conn, r.err
}

// dialInNamespace must run on a locked thread; back reports whether the thread is in
// its original namespace again.
func dialInNamespace(nsPath, addr string, timeout time.Duration) (c net.Conn, err error, back bool) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("open own namespace: %w", err), true
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open namespace: %w", err), true
	}
	defer target.Close()
	if err := setns(target); err != nil {
		return nil, err, false
	}
	c, err = net.DialTimeout("tcp", addr, timeout)
	return c, err, setns(orig) == nil
}

func setns(f *os.File) error {
	if _, _, errno := syscall.RawSyscall(setnsSyscall[runtime.GOARCH], f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return fmt.Errorf("setns %s: %w", f.Name(), errno)
	}
	return nil
}

// httpClient talks to agents from the client namespace.
func (l *lab) httpClient() *http.Client {
	return &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				timeout := time.Second
				if d, ok := ctx.Deadline(); ok {
					timeout = time.Until(d)
				}
				return l.dial(addr, timeout)
			},
		},
	}
}

// readyz returns the HTTP status of node's /readyz, or 0 when unreachable.
func (l *lab) readyz(node string) int {
	resp, err := l.httpClient().Get("http://" + nodeIPs[node] + ":9101/readyz")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// agentStatus is the part of an agent's /status the drills read.
type agentStatus struct {
	Ready          bool   `json:"ready"`
	Degraded       bool   `json:"degraded"`
	DegradedReason string `json:"degraded_reason"`
	Data           struct {
		Current bool `json:"current"`
	} `json:"data_session"`
	// Interest is the table's figures, shown when a drill fails.
	Interest json.RawMessage `json:"interest"`
	Peers    []struct {
		Name            string   `json:"name"`
		Up              bool     `json:"up"`
		Interest        []string `json:"interest"`
		InterestFilters int      `json:"interest_filters"`
	} `json:"peers"`
	Replication struct {
		Kept       int `json:"kept"`
		Replicated int `json:"replicated"`
	} `json:"session_replication"`
}

// status reads node's /status from the lab's host: not loopback for the agent, so
// with the cluster's status token.
func (l *lab) status(node string) (agentStatus, error) {
	var s agentStatus
	req, err := http.NewRequest(http.MethodGet, "http://"+nodeIPs[node]+":9101/status", nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Authorization", "Bearer "+l.cluster.StatusToken)
	resp, err := l.httpClient().Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status of %s: %s", node, resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// waitReady waits until node's /readyz answers 200 (want) or anything else.
func (l *lab) waitReady(t testing.TB, node string, want bool, timeout time.Duration) time.Duration {
	t.Helper()
	took, ok := pollUntil(timeout, func() bool { return (l.readyz(node) == http.StatusOK) == want })
	if !ok {
		s, err := l.status(node)
		t.Fatalf("%s /readyz ok=%v not reached after %v (status %+v, %v); logs in %s", node, want, timeout, s, err, l.dir)
	}
	return took
}

// waitSettled waits until node is ready and not degraded.
func (l *lab) waitSettled(t testing.TB, node string, timeout time.Duration) {
	t.Helper()
	l.waitStatus(t, node, timeout, "ready and settled", func(s agentStatus) bool { return s.Ready && !s.Degraded })
}

// waitLinked waits until node is ready and settled and has a link up to every
// peer: after a partition heals, a node may still be waiting out its redial
// backoff (up to 5 s) while the others are already linked.
func (l *lab) waitLinked(t testing.TB, node string, timeout time.Duration) {
	t.Helper()
	l.waitStatus(t, node, timeout, "linked to every peer", func(s agentStatus) bool {
		if !s.Ready || s.Degraded || len(s.Peers) != len(nodeNames)-1 {
			return false
		}
		for _, p := range s.Peers {
			if !p.Up {
				return false
			}
		}
		return true
	})
}

// waitStatus polls node's /status until cond holds, and fails the test with
// the last status after timeout.
func (l *lab) waitStatus(t testing.TB, node string, timeout time.Duration, what string, cond func(agentStatus) bool) {
	t.Helper()
	if _, ok := pollUntil(timeout, func() bool {
		s, err := l.status(node)
		return err == nil && cond(s)
	}); !ok {
		s, err := l.status(node)
		t.Fatalf("%s not %s after %v: %+v %v", node, what, timeout, s, err)
	}
}

// writeLBConfigs writes lb's haproxy.cfg and keepalived.conf, both from moha's
// renderer (keepalived with unicast peers: VRRP between the lab's namespaces).
func (l *lab) writeLBConfigs(lb string) {
	l.t.Helper()
	dir := filepath.Join(l.dir, lb)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	hap, err := render.HAProxy(l.cluster, render.HAProxyOptions{})
	if err != nil {
		l.t.Fatalf("render haproxy: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(hap), 0o644); err != nil {
		l.t.Fatal(err)
	}
	ka, err := render.Keepalived(l.cluster, lb, render.KeepalivedOptions{Unicast: true})
	if err != nil {
		l.t.Fatalf("render keepalived: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keepalived.conf"), []byte(ka), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// waitLBServes waits until an MQTT client reaches a broker through the floating IP.
func (l *lab) waitLBServes(timeout time.Duration) {
	l.t.Helper()
	waitFor(l.t, timeout, "an MQTT CONNACK through the floating IP", func() bool {
		return l.probeConnect(floatingIP+":1883", "lab-probe", 500*time.Millisecond) == nil
	})
}
