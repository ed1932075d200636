package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/runtimetune"
	"github.com/moha-project/moha/internal/testkit"
)

// TestMain lets the test binary stand in for the moha binary: `moha up`
// starts its agents as children of os.Executable(), which here is this
// test binary, called with MOHA_TEST_AS_MOHA=1.
func TestMain(m *testing.M) {
	if os.Getenv("MOHA_TEST_AS_MOHA") == "1" {
		main()
		os.Exit(0)
	}
	os.Setenv("MOHA_TEST_AS_MOHA", "1") // inherited by the agents moha up starts
	code := m.Run()
	os.Exit(code)
}

// TestUp runs `moha up` as a user would: the cluster comes up behind
// HAProxy, cluster.json appears once it is ready, a message crosses nodes,
// and cancelling (Ctrl-C) stops every process.
func TestUp(t *testing.T) {
	dir := t.TempDir()
	port := testkit.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"up", "--nodes", "2", "--port", strconv.Itoa(port), "--dir", dir, "--log-level", "warn"}, &stdout, &stderr)
	}()
	var eps struct {
		LB    string `json:"lb"`
		Nodes []struct {
			Name, Broker, HTTP string
		} `json:"nodes"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
		if err == nil {
			if err := json.Unmarshal(data, &eps); err != nil {
				t.Fatalf("cluster.json: %v\n%s", err, data)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("moha up ended before it was ready: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster.json after 30s; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if eps.LB != "127.0.0.1:"+strconv.Itoa(port) || len(eps.Nodes) != 2 || eps.Nodes[0].Broker == "" || eps.Nodes[0].HTTP == "" {
		t.Fatalf("cluster.json lacks endpoints: %+v", eps)
	}
	for _, want := range []string{"load balancer", eps.LB, "node1", "node2", "anonymous clients"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("printed endpoints lack %q:\n%s", want, stdout.String())
		}
	}
	for _, name := range []string{"haproxy", "mosquitto-node1", "agent-node2"} {
		if _, err := os.Stat(filepath.Join(dir, "logs", name+".log")); err != nil {
			t.Errorf("no log for %s: %v", name, err)
		}
	}

	// Agents run with the runtime setting they re-execute themselves for.
	var st struct {
		Runtime struct {
			GOMAXPROCS  int    `json:"gomaxprocs"`
			GODEBUG     string `json:"godebug"`
			SchedPolicy string `json:"sched_policy"`
		} `json:"runtime"`
	}
	getJSON(t, "http://"+eps.Nodes[0].HTTP+"/status", &st)
	if st.Runtime.GOMAXPROCS != 1 || !strings.Contains(st.Runtime.GODEBUG, runtimetune.SysmonSetting) || st.Runtime.SchedPolicy != "batch" {
		t.Errorf("agent runtime = %+v, want gomaxprocs 1, GODEBUG with %s, every thread batch", st.Runtime, runtimetune.SysmonSetting)
	}

	// A subscriber on node2 gets what a client publishes through the load balancer
	// and what one publishes on node1 directly.
	sub := dial(t, eps.Nodes[1].Broker, "up-sub")
	got := make(chan string, 10)
	sub.AddOnPublishReceived(func(r paho.PublishReceived) (bool, error) {
		got <- string(r.Packet.Payload)
		return true, nil
	})
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "up/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{eps.LB, eps.Nodes[0].Broker} {
		pub := dial(t, target, "up-pub-"+target)
		waitFor(t, 10*time.Second, "a message from "+target, func() bool {
			if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "up/x", QoS: 1, Payload: []byte(target)}); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-got:
				return p == target
			case <-time.After(500 * time.Millisecond):
				return false
			}
		})
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("moha up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("moha up did not stop within 30s")
	}
	for _, addr := range []string{eps.LB, eps.Nodes[0].Broker, eps.Nodes[1].Broker, eps.Nodes[0].HTTP, eps.Nodes[1].HTTP} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after moha up stopped", addr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cluster.json")); err == nil {
		t.Error("cluster.json left behind for a stopped cluster")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func dial(t *testing.T, addr, id string) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// TestBenchUsesURL: the load test runs against the endpoint --url names
// (and nothing else: a broker on the default port must not answer for it).
func TestBenchUsesURL(t *testing.T) {
	b := testkit.StartBroker(t)
	var out, errOut bytes.Buffer
	args := []string{"bench", "--url", b.Addr, "--scenario", "local", "--messages", "50", "--json", "--quiet"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("moha bench: %v\n%s", err, errOut.String())
	}
	var r struct{ Expected, Delivered, Lost int64 }
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out.String())
	}
	if r.Expected == 0 || r.Delivered != r.Expected || r.Lost != 0 {
		t.Errorf("delivered %d of %d, lost %d", r.Delivered, r.Expected, r.Lost)
	}
	if !strings.Contains(b.Log(), " as moha-bench-") {
		t.Errorf("no bench client connected to --url %s; its log:\n%s", b.Addr, b.Log())
	}
}

// TestBadConfigIsRefused: every problem is named, one line each, and the
// agent does not start.
func TestBadConfigIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte("secret: short\nnodes:\n  - name: a\n    broker: {address: nowhere}\n  - name: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"agent", "--cluster", cfg, "--node", "a"}, &out, &errOut)
	if err == nil {
		t.Fatal("agent started with a bad cluster file")
	}
	for _, want := range []string{"secret", "broker.address", "nodes[1].name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	err = run(context.Background(), []string{"agent", "--cluster", filepath.Join(dir, "missing.yaml"), "--node", "a"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestRenderMosquitto: the CLI prints the broker config the agent needs.
func TestRenderMosquitto(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte("secret: 0123456789abcdef0123\nnodes:\n  - name: n1\n    broker: {address: 127.0.0.1:1883}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"render", "mosquitto", "--cluster", cfg, "--node", "n1"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"log_dest topic\n", "log_type subscribe\n", "log_type unsubscribe\n", "persistence true\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("rendered config lacks %q", want)
		}
	}
	if err := run(context.Background(), []string{"render", "mosquitto", "--cluster", cfg}, &out, &errOut); err == nil {
		t.Error("render mosquitto without --node succeeded")
	}
}

type syncBuffer = testkit.SyncBuffer
