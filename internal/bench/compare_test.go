package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// mohaBinary builds ./cmd/moha once per test binary: the moha setup runs
// its agents as child processes of that executable.
func mohaBinary(t testing.TB) string { return testkit.MohaBinary(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveMohaBinary()
	os.Exit(code)
}

// compareOptions is a tiny workload through the given setups, recording
// the pid of every process the setups start.
func compareOptions(t *testing.T, o Options, setups []string, pids *[]int) CompareOptions {
	t.Helper()
	if _, err := launch.FindBinary("mosquitto"); err != nil {
		testkit.SkipUnavailable(t, "mosquitto is missing: %v", err)
	}
	var mu sync.Mutex
	var progress syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s", progress.String())
		}
	})
	return CompareOptions{
		Bench:        o,
		Setups:       setups,
		AgentBinary:  mohaBinary(t),
		Dir:          t.TempDir(),
		SetupTimeout: 20 * time.Second,
		Progress:     &progress,
		onStart: func(_ string, started []int) {
			mu.Lock()
			*pids = append(*pids, started...)
			mu.Unlock()
		},
	}
}

func runCompare(t *testing.T, o CompareOptions) *CompareResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := Compare(ctx, o)
	if err != nil {
		t.Fatalf("compare: %v", err)
	}
	var table syncBuffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	return res
}

func requireRow(t *testing.T, res *CompareResult, name string) *CompareRow {
	t.Helper()
	r := res.row(name)
	if r == nil {
		t.Fatalf("no %s row in %+v", name, res.Rows)
	}
	return r
}

func requireAllDelivered(t *testing.T, r *CompareRow) {
	t.Helper()
	res := r.Result
	if res.Lost != 0 || res.Duplicated != 0 || res.Delivered != res.Expected || res.Expected == 0 {
		t.Errorf("%s: delivered %d of %d, lost %d, duplicated %d", r.Setup, res.Delivered, res.Expected, res.Lost, res.Duplicated)
	}
}

func requireGone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no process was recorded")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Compare (kill 0: %v)", pid, err)
		}
	}
}

func TestCompareSmoke(t *testing.T) {
	o, err := DefaultOptions(ScenarioSeed)
	if err != nil {
		t.Fatal(err)
	}
	// Subscriber 9 (on the second endpoint) holds test_1/9; publisher 0
	// is on the first endpoint, publisher 1 on the second.
	o.Subscribers, o.Publishers, o.Messages, o.Topic = 10, 2, 100, "test_1/9"
	var pids []int
	res := runCompare(t, compareOptions(t, o, nil, &pids))

	if got := len(res.Rows); got != len(Setups) {
		t.Fatalf("%d rows, want %d", got, len(Setups))
	}
	single, bridge, moha := requireRow(t, res, SetupSingle), requireRow(t, res, SetupBridge), requireRow(t, res, SetupMoha)
	for _, r := range []*CompareRow{single, bridge, moha} {
		requireAllDelivered(t, r)
		if r.BrokerCPU < 0 || r.AgentCPU < 0 {
			t.Errorf("%s: negative CPU %s / %s", r.Setup, r.BrokerCPU, r.AgentCPU)
		}
	}
	if single.InterNodeBytes != 0 || single.Result.CrossDelivered != 0 {
		t.Errorf("single: %d bytes between brokers, %d cross-node deliveries, want 0", single.InterNodeBytes, single.Result.CrossDelivered)
	}
	if bridge.InterNodeBytes <= 0 {
		t.Errorf("bridge: %d bytes between brokers, want > 0", bridge.InterNodeBytes)
	}
	if moha.InterNodeBytes <= 0 || moha.InterNodeBytes >= bridge.InterNodeBytes {
		t.Errorf("moha: %d bytes between brokers, want > 0 and < the bridge's %d", moha.InterNodeBytes, bridge.InterNodeBytes)
	}
	for _, r := range []*CompareRow{bridge, moha} {
		if want := int64(o.Messages); r.Result.CrossDelivered != want {
			t.Errorf("%s: %d cross-node deliveries, want %d", r.Setup, r.Result.CrossDelivered, want)
		}
	}
	// Only publisher 0's messages have a subscriber on the other node.
	if moha.Forwarded != int64(o.Messages) {
		t.Errorf("moha: agents forwarded %d messages, want %d", moha.Forwarded, o.Messages)
	}
	if single.AgentCPU != 0 || bridge.AgentCPU != 0 || bridge.Forwarded != 0 {
		t.Errorf("agent figures without agents: single %s, bridge %s / %d", single.AgentCPU, bridge.AgentCPU, bridge.Forwarded)
	}
	// The publishing phase is inside the whole window, and every message
	// crossed during it.
	for _, r := range []*CompareRow{single, bridge, moha} {
		p := r.Publishing
		if p == nil {
			t.Errorf("%s: no publishing-phase figures", r.Setup)
			continue
		}
		if p.BrokerCPU < 0 || p.BrokerCPU > r.BrokerCPU || p.AgentCPU < 0 || p.AgentCPU > r.AgentCPU {
			t.Errorf("%s: publishing CPU %s / %s outside the whole run's %s / %s", r.Setup, p.BrokerCPU, p.AgentCPU, r.BrokerCPU, r.AgentCPU)
		}
	}
	if p := moha.Publishing; p != nil && p.Forwarded != moha.Forwarded {
		t.Errorf("moha: %d messages forwarded while publishing, %d in all", p.Forwarded, moha.Forwarded)
	}
	if res.MohaVsBridge == nil || res.MohaVsBridge.InterNodeBytes <= 0 || res.MohaVsBridge.InterNodeBytes >= 1 {
		t.Errorf("moha/bridge ratios: %+v", res.MohaVsBridge)
	}
	requireGone(t, pids)
}

func TestCompareLocalCrossesAlmostNothing(t *testing.T) {
	o, err := DefaultOptions(ScenarioLocal)
	if err != nil {
		t.Fatal(err)
	}
	o.Messages = 200
	var pids []int
	co := compareOptions(t, o, []string{SetupBridge, SetupMoha}, &pids)
	co.Rounds = 2
	res := runCompare(t, co)
	if len(res.Rounds) != 2 || res.Round < 1 || res.Round > 2 {
		t.Errorf("two rounds ran: round %d shown, rounds %+v", res.Round, res.Rounds)
	}
	bridge, moha := requireRow(t, res, SetupBridge), requireRow(t, res, SetupMoha)
	requireAllDelivered(t, bridge)
	requireAllDelivered(t, moha)
	// The bridge carries every message; moha only interest and link
	// upkeep. At full size this is well under 1%; at this size 10%.
	if moha.InterNodeBytes*10 >= bridge.InterNodeBytes {
		t.Errorf("moha %d bytes between brokers, bridge %d: want under 10%%", moha.InterNodeBytes, bridge.InterNodeBytes)
	}
	if moha.Forwarded != 0 {
		t.Errorf("moha forwarded %d messages in the local scenario", moha.Forwarded)
	}
	requireGone(t, pids)
}

func TestCompareStopsEverythingOnCancel(t *testing.T) {
	o, err := DefaultOptions(ScenarioFanout)
	if err != nil {
		t.Fatal(err)
	}
	o.Messages = 1_000_000 // far more than the test waits for
	var pids []int
	co := compareOptions(t, o, []string{SetupMoha}, &pids)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	co.onStart = func(_ string, p []int) { pids = append(pids, p...); close(started) }
	done := make(chan error, 1)
	go func() { _, err := Compare(ctx, co); done <- err }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("compare ended before the setup started: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the moha setup did not start within 30s")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("compare after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("compare did not return within 30s of cancel")
	}
	requireGone(t, pids)
}

// Three nodes: the bridge is a star around mosquitto-a, moha a full mesh.
// In the fanout every subscriber hears every publisher, and with clients
// on node i mod 3 each pair of nodes carries messages both ways, spoke to
// spoke through the hub included: no loss means every path works.
func TestCompareThreeNodes(t *testing.T) {
	const nodes = 3
	o, err := DefaultOptions(ScenarioFanout)
	if err != nil {
		t.Fatal(err)
	}
	o.Publishers, o.Subscribers, o.Messages = nodes, 2*nodes, 100
	var pids []int
	co := compareOptions(t, o, nil, &pids)
	co.Nodes = nodes
	res := runCompare(t, co)

	if res.Nodes != nodes {
		t.Errorf("result says %d nodes, want %d", res.Nodes, nodes)
	}
	single, bridge, moha := requireRow(t, res, SetupSingle), requireRow(t, res, SetupBridge), requireRow(t, res, SetupMoha)
	for _, r := range []*CompareRow{single, bridge, moha} {
		requireAllDelivered(t, r)
	}
	if single.InterNodeBytes != 0 || single.Relays != 0 || single.Links != 0 {
		t.Errorf("single: %d bytes, %d relays, %d links between brokers, want none", single.InterNodeBytes, single.Relays, single.Links)
	}
	// Each subscriber hears the publishers of the two other nodes.
	wantCross := int64(o.Subscribers * (nodes - 1) * o.Messages)
	for _, c := range []struct {
		r             *CompareRow
		relays, links int
	}{
		{bridge, nodes - 1, nodes - 1},             // a relay per spoke
		{moha, nodes - 1, nodes * (nodes - 1) / 2}, // a relay per dialled listener, a link per pair
	} {
		r := c.r
		if r.Relays != c.relays || r.Links != c.links {
			t.Errorf("%s: %d relays carrying %d links, want %d and %d", r.Setup, r.Relays, r.Links, c.relays, c.links)
		}
		if r.InterNodeBytes <= 0 || r.InterNodeBytesPerDelivered <= 0 || r.CPUPerDelivered <= 0 {
			t.Errorf("%s: %d bytes between brokers, %.1f per delivered message, %.1f µs CPU per delivered message; want > 0",
				r.Setup, r.InterNodeBytes, r.InterNodeBytesPerDelivered, r.CPUPerDelivered)
		}
		if r.Result.CrossDelivered != wantCross {
			t.Errorf("%s: %d cross-node deliveries, want %d", r.Setup, r.Result.CrossDelivered, wantCross)
		}
	}
	// Every message has subscribers on both other nodes.
	if want := int64(o.Publishers * o.Messages * (nodes - 1)); moha.Forwarded != want {
		t.Errorf("moha: agents forwarded %d messages, want %d", moha.Forwarded, want)
	}
	requireGone(t, pids)
}

func TestCompareNodesOption(t *testing.T) {
	o, err := DefaultOptions(ScenarioSeed)
	if err != nil {
		t.Fatal(err)
	}
	// A binary that is never started: fill only checks the options.
	base := CompareOptions{Bench: o, Setups: []string{SetupSingle}, MosquittoBinary: "/nonexistent/mosquitto"}
	for _, n := range []int{-1, 1, MaxNodes + 1, 100} {
		co := base
		co.Nodes = n
		err := co.fill()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), fmt.Sprintf("%d nodes, want 2 to 5", n)) {
			t.Errorf("%d nodes: %v, want a clear ErrInvalidOptions", n, err)
		}
		if _, err := Compare(context.Background(), co); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Compare with %d nodes: %v, want ErrInvalidOptions", n, err)
		}
	}
	for n := MinNodes; n <= MaxNodes; n++ {
		co := base
		co.Nodes = n
		if err := co.fill(); err != nil || co.Nodes != n {
			t.Errorf("%d nodes: %v, nodes now %d", n, err, co.Nodes)
		}
	}
	co := base
	if err := co.fill(); err != nil || co.Nodes != DefaultNodes {
		t.Errorf("no node count: %v, nodes now %d, want the default %d", err, co.Nodes, DefaultNodes)
	}
}

func TestCompareRejectsBadOptions(t *testing.T) {
	o, err := DefaultOptions(ScenarioSeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compare(context.Background(), CompareOptions{Bench: o, Setups: []string{"cluster"}}); !errors.Is(err, ErrUnknownSetup) {
		t.Errorf("unknown setup: %v", err)
	}
	if _, err := Compare(context.Background(), CompareOptions{Bench: o, Setups: []string{SetupMoha}}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("moha without agent binary: %v", err)
	}
	if _, err := Compare(context.Background(), CompareOptions{Bench: o, Setups: []string{SetupSingle, SetupSingle}}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("a setup twice: %v", err)
	}
	o.Messages = 0
	if _, err := Compare(context.Background(), CompareOptions{Bench: o}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("zero messages: %v", err)
	}
}

func TestCompareTable(t *testing.T) {
	row := func(setup string, rate float64, bytes int64, fwd int64) CompareRow {
		return CompareRow{
			Setup: setup,
			Result: &Result{Scenario: ScenarioSeed, Publishers: 20, Subscribers: 500, Messages: 3000, Size: 100, QoS: 1,
				Pipeline: 1, Expected: 60000, Delivered: 60000, Published: 60000, DeliveredRate: rate},
			InterNodeBytes: bytes, Forwarded: fwd, AgentCPU: time.Duration(fwd) * 10 * time.Microsecond,
			AgentCPUPerMsg: 10, InterNodeBytesPerDelivered: float64(bytes) / 60000,
			Publishing: &PhaseCPU{Forwarded: fwd, AgentCPU: time.Duration(fwd) * 8 * time.Microsecond, AgentCPUPerMsg: 8.5},
		}
	}
	res := &CompareResult{Scenario: ScenarioSeed, Nodes: 3, Rows: []CompareRow{
		row(SetupSingle, 30000, 0, 0), row(SetupBridge, 20000, 10_000_000, 0), row(SetupMoha, 25000, 4_000_000, 30000),
	}}
	res.MohaVsBridge = res.ratios()
	var b strings.Builder
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"scenario seed: 20 publishers x 3000 messages x 100 B, 500 subscribers (clean sessions), QoS 1, pipeline 1",
		"single", "bridge", "moha/bridge", "60000 / 60000", "1.25x", "10,000,000", "4,000,000", "0.40x", "10.0",
		"agent CPU per fwd msg, publishing (µs) ⁵", "8.5",
		"3 nodes: bridge a star", "  per delivered msg", "166.7", "66.7", "relays / links between brokers ²",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	header := lines[3] // after the scenario, the nodes and a blank line
	if !(strings.Index(header, "single") < strings.Index(header, "bridge") &&
		strings.Index(header, "bridge") < strings.Index(header, " moha ")) {
		t.Errorf("columns not in run order: %q", header)
	}
	// Without a bridge row there is nothing to divide by.
	res.Rows = res.Rows[2:]
	res.MohaVsBridge = res.ratios()
	b.Reset()
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "moha/bridge") {
		t.Errorf("ratio column without a bridge row:\n%s", b.String())
	}
}

func TestMedianRound(t *testing.T) {
	round := func(rate float64) *CompareResult {
		return &CompareResult{Scenario: ScenarioSeed, MohaVsBridge: &CompareRatios{DeliveredRate: rate, CPU: 1}}
	}
	rounds := []*CompareResult{round(1.2), round(0.9), round(1.0)}
	res := medianRound(rounds)
	if res != rounds[2] || res.Round != 3 || len(res.Rounds) != 3 || res.Rounds[0].DeliveredRate != 1.2 {
		t.Errorf("median of 1.2, 0.9, 1.0: round %d, rounds %+v", res.Round, res.Rounds)
	}
	var b strings.Builder
	res.writeRounds(&b)
	for _, want := range []string{"round 3 of 3", "1.20x", "0.90x", "1.00x"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("rounds lack %q:\n%s", want, b.String())
		}
	}
	// An even count shows the lower middle round.
	rounds = []*CompareResult{round(1.1), round(0.8), round(1.3), round(0.95)}
	if res := medianRound(rounds); res.Round != 4 {
		t.Errorf("median of 1.1, 0.8, 1.3, 0.95: round %d, want 4", res.Round)
	}
	// Without moha and the bridge there is no ratio to choose by.
	rounds = []*CompareResult{{Scenario: ScenarioSeed}, {Scenario: ScenarioSeed}}
	if res := medianRound(rounds); res != rounds[0] || len(res.Rounds) != 0 {
		t.Errorf("no ratios: round %d, rounds %+v", res.Round, res.Rounds)
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 123456789: "123,456,789", -1234: "-1,234"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestBrokerConfigIsAccepted checks what bench adds to the plain broker
// (internal/plainbroker tests the rest): its log types and a bridge section.
func TestBrokerConfigIsAccepted(t *testing.T) {
	bin, err := launch.FindBinary("mosquitto")
	if err != nil {
		testkit.SkipUnavailable(t, "mosquitto is missing: %v", err)
	}
	text, err := brokerConfig("b", "127.0.0.1:1", bridgeSection("bridge-b", "127.0.0.1:2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# moha bench compare: broker b\n", "listener 1 127.0.0.1\n",
		fmt.Sprintf("max_queued_messages %d\n", config.Default().MaxQueuedMessages),
		"log_type notice\n", "connection bridge-b\n", "topic # both 2\n", "address 127.0.0.1:2\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	// mosquitto has no config check mode: start it on a free port and see
	// that it listens.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p, _, err := startBroker(ctx, bin, t.TempDir(), "bridged", bridgeSection("bridge-b", "127.0.0.1:1"))
	if err != nil {
		t.Fatalf("mosquitto rejects the bridge config: %v", err)
	}
	p.Stop(stopGrace)
}

func TestBeforePublishRunsAfterSubscribesAndCanStopTheRun(t *testing.T) {
	a, b := startMosquitto(t), startMosquitto(t)
	o := smallOptions(t, ScenarioFanout, a, b)
	o.Isolated = true
	var calls int
	o.BeforePublish = func(ctx context.Context) error {
		calls++
		// A message that is not the run's, published now, reaches every
		// subscriber on a only if they have all subscribed already.
		c, err := connectClient(ctx, endpoint{ClientID: "before-publish", Address: a}, paho.ClientConfig{}, 1)
		if err != nil {
			return err
		}
		defer closeClient(c)
		_, err = c.Publish(ctx, &paho.Publish{Topic: o.Topic, QoS: 1, Payload: []byte("not the run's")})
		return err
	}
	res := runBench(t, o)
	if calls != 1 {
		t.Errorf("BeforePublish called %d times, want 1", calls)
	}
	if want := int64((o.Subscribers + 1) / 2); res.Stray != want {
		t.Errorf("Stray = %d, want %d: subscribers on a missed a message published in BeforePublish", res.Stray, want)
	}
	// Isolated fanout: each subscriber gets only the publisher on its own
	// broker, so nothing counts as crossing.
	if res.CrossDelivered != 0 || res.Delivered != res.Expected {
		t.Errorf("isolated fanout: delivered %d of %d, %d across addresses", res.Delivered, res.Expected, res.CrossDelivered)
	}

	stop := errors.New("not yet")
	o.BeforePublish = func(context.Context) error { return stop }
	if res, err := Run(context.Background(), o); !errors.Is(err, stop) || res != nil {
		t.Errorf("Run with a failing BeforePublish: %v, %v", res, err)
	}
}

func TestAfterDrainRunsOnceBeforeClientsDisconnect(t *testing.T) {
	a, b := startMosquitto(t), startMosquitto(t)
	o := smallOptions(t, ScenarioFanout, a, b)
	o.Isolated = true // two brokers not joined: each subscriber hears its own
	var calls, open int
	o.AfterDrain = func(context.Context) {
		calls++
		open = establishedTo(t, a)
	}
	res := runBench(t, o)
	if calls != 1 {
		t.Errorf("AfterDrain called %d times, want 1", calls)
	}
	if res.Delivered != res.Expected {
		t.Errorf("delivered %d of %d", res.Delivered, res.Expected)
	}
	// Clients alternate between a and b, starting with a.
	if want := (o.Subscribers+1)/2 + (o.Publishers+1)/2; open < want {
		t.Errorf("%d connections to %s when AfterDrain ran, want the run's %d still open", open, a, want)
	}
	if n := establishedTo(t, a); n != 0 {
		t.Errorf("%d connections to %s after the run", n, a)
	}
}

// establishedTo counts this host's established TCP connections to addr
// (an IPv4 host:port), from /proc/net/tcp: the run's own clients.
func establishedTo(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.Addr().As4()
	// /proc/net/tcp prints the address as a little-endian hex word.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		const established = "01"
		if len(f) > 3 && f[2] == want && f[3] == established {
			n++
		}
	}
	return n
}

func TestCrossDeliveredCountsOtherAddresses(t *testing.T) {
	broker := startMosquitto(t)
	// Two names for one broker: the plan sees two addresses, so half of
	// the fanout's streams count as crossing.
	o := smallOptions(t, ScenarioFanout, "127.0.0.1:"+strings.Split(broker, ":")[1], "localhost:"+strings.Split(broker, ":")[1])
	o.Publishers, o.Subscribers = 2, 2
	res := runBench(t, o)
	if res.Delivered != res.Expected || res.CrossDelivered != res.Expected/2 || res.CrossDeliveredRate <= 0 {
		t.Errorf("delivered %d of %d, %d across addresses at %.0f msg/s; want half across",
			res.Delivered, res.Expected, res.CrossDelivered, res.CrossDeliveredRate)
	}
}
