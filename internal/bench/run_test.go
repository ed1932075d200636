package bench

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/testkit"
)

// smallOptions returns a scenario's defaults scaled down for tests.
func smallOptions(t *testing.T, scenario string, urls ...string) Options {
	t.Helper()
	o, err := DefaultOptions(scenario)
	if err != nil {
		t.Fatal(err)
	}
	o.URLs = urls
	o.Messages = 100
	o.Timeout = 5 * time.Second
	return o
}

func runBench(t *testing.T, o Options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// assertComplete checks a run where everything published must arrive once,
// in order.
func assertComplete(t *testing.T, res *Result, wantExpected int64) {
	t.Helper()
	if res.Expected != wantExpected {
		t.Errorf("Expected = %d, want %d", res.Expected, wantExpected)
	}
	if res.Delivered != res.Expected || res.Lost != 0 {
		t.Errorf("Delivered = %d, Lost = %d, want %d delivered", res.Delivered, res.Lost, res.Expected)
	}
	if res.Duplicated != 0 || res.OutOfOrder != 0 || res.Stray != 0 {
		t.Errorf("Duplicated = %d, OutOfOrder = %d, Stray = %d, want 0", res.Duplicated, res.OutOfOrder, res.Stray)
	}
	wantPublished := int64(res.Publishers * res.Messages)
	if res.Published != wantPublished || res.PublishErrors != 0 {
		t.Errorf("Published = %d (%d errors), want %d", res.Published, res.PublishErrors, wantPublished)
	}
	if res.Disconnects != 0 {
		t.Errorf("Disconnects = %d, want 0", res.Disconnects)
	}
	if res.LatencyP50 <= 0 || res.LatencyP50 > res.LatencyP95 || res.LatencyP95 > res.LatencyP99 ||
		res.LatencyP99 > res.LatencyMax {
		t.Errorf("latencies p50 %s p95 %s p99 %s max %s: want 0 < p50 <= p95 <= p99 <= max",
			res.LatencyP50, res.LatencyP95, res.LatencyP99, res.LatencyMax)
	}
	if res.Duration <= 0 || res.DeliveredRate <= 0 || res.PublishRate <= 0 || res.PublishRatePerClient <= 0 {
		t.Errorf("Duration %s, rates %.0f / %.0f / %.0f: want all positive",
			res.Duration, res.DeliveredRate, res.PublishRate, res.PublishRatePerClient)
	}
}

func TestRunSeedScaledDown(t *testing.T) {
	broker := startMosquitto(t)
	o := smallOptions(t, ScenarioSeed, "tcp://"+broker)
	o.Subscribers, o.Publishers, o.Messages = 10, 2, 200
	o.Topic = "test_1/9" // only subscriber 9 matches, as 499 does in the seed
	res := runBench(t, o)
	assertComplete(t, res, 2*200)

	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scenario", "seed", "lost", "latency p50/p95/p99/max"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"out_of_order":0`, `"publish_rate_per_client":`, `"latency_p99":`, `"delivered":400`} {
		if !strings.Contains(string(js), key) {
			t.Errorf("JSON lacks %s: %s", key, js)
		}
	}
}

// Two independent brokers: with Isolated, only same-broker pairs count.
func TestRunScenariosIsolatedBrokers(t *testing.T) {
	a, b := startMosquitto(t), startMosquitto(t)
	cases := []struct {
		scenario  string
		pubs, sub int
		// publishers alternate a, b, a, …; subscribers too.
		want int64
	}{
		{ScenarioFanout, 1, 4, 2 * 100},   // publisher on a; subscribers 0 and 2 on a
		{ScenarioFanin, 4, 1, 2 * 100},    // subscriber on a; publishers 0 and 2 on a
		{ScenarioWildcard, 4, 4, 8 * 100}, // each subscriber gets the 2 publishers of its broker
		{ScenarioLocal, 4, 4, 8 * 100},    // same: everything stays local
	}
	for _, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			o := smallOptions(t, tc.scenario, a, "tcp://"+b)
			o.Isolated = true
			o.Publishers, o.Subscribers = tc.pubs, tc.sub
			assertComplete(t, runBench(t, o), tc.want)
		})
	}
}

// Both URLs name one broker, so every subscriber sees every publisher, as
// in a cluster.
func TestRunScenariosSharedBroker(t *testing.T) {
	a := startMosquitto(t)
	cases := []struct {
		scenario  string
		pubs, sub int
		want      int64
	}{
		{ScenarioFanout, 1, 4, 4 * 100},
		{ScenarioFanin, 4, 1, 4 * 100},
		{ScenarioWildcard, 4, 4, 16 * 100},
		{ScenarioLocal, 4, 4, 8 * 100}, // the url index is part of the topic
	}
	for _, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			o := smallOptions(t, tc.scenario, a, "tcp://"+a)
			o.Publishers, o.Subscribers = tc.pubs, tc.sub
			assertComplete(t, runBench(t, o), tc.want)
		})
	}
}

func TestRunDetectsLoss(t *testing.T) {
	a, b := startMosquitto(t), startMosquitto(t)
	o := smallOptions(t, ScenarioFanout, b) // publisher on b …
	o.SubscriberURLs = []string{a}          // … subscribers on a, no bridge between them
	o.Subscribers, o.Messages = 2, 50
	o.Timeout = 300 * time.Millisecond
	res := runBench(t, o)
	if res.Expected != 100 || res.Lost != res.Expected || res.Delivered != 0 {
		t.Errorf("Expected %d, Delivered %d, Lost %d: want 100 expected, all lost", res.Expected, res.Delivered, res.Lost)
	}
	if res.Published != 50 || res.PublishErrors != 0 {
		t.Errorf("Published %d (%d errors), want 50", res.Published, res.PublishErrors)
	}
}

func TestRunPipeline(t *testing.T) {
	broker := startMosquitto(t)
	for _, tc := range []struct {
		name     string
		qos      byte
		pipeline int
	}{
		{"qos1 pipeline 8", 1, 8},
		// Mosquitto's Receive Maximum is 20: the session holds the rest back.
		{"qos2 pipeline 32", 2, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := smallOptions(t, ScenarioFanin, broker)
			o.Publishers, o.Messages, o.QoS, o.Pipeline = 2, 500, tc.qos, tc.pipeline
			assertComplete(t, runBench(t, o), 2*500)
		})
	}
}

func TestRunReportsProgressAndStopsOnCancel(t *testing.T) {
	broker := startMosquitto(t)
	o := smallOptions(t, ScenarioFanout, broker)
	o.Messages = 10_000_000 // far more than fits in the deadline
	var progress syncBuffer
	o.Progress = &progress
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Run(ctx, o)
		done <- outcome{res, err}
	}()
	waitFor(t, 10*time.Second, "a progress line", func() bool { return strings.Contains(progress.String(), "delivered") })
	cancel()
	select {
	case out := <-done:
		if !errors.Is(out.err, context.Canceled) {
			t.Fatalf("Run error = %v, want context.Canceled", out.err)
		}
		if out.res == nil || out.res.Published == 0 || out.res.Delivered == 0 {
			t.Fatalf("partial result %+v, want some published and delivered", out.res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunFailsWhenBrokerUnreachable(t *testing.T) {
	o := smallOptions(t, ScenarioFanout, "127.0.0.1:"+strconv.Itoa(testkit.FreePort(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Run(ctx, o)
	if err == nil || res != nil {
		t.Fatalf("Run = %v, %v; want an error and no result", res, err)
	}
	if !strings.Contains(err.Error(), "dial") {
		t.Errorf("error %q does not say what failed", err)
	}
}

func TestRunRejectsInvalidOptions(t *testing.T) {
	o := smallOptions(t, ScenarioSeed, "127.0.0.1:1")
	o.QoS = 3
	if _, err := Run(context.Background(), o); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Run error = %v, want ErrInvalidOptions", err)
	}
}

// Connections cut in the middle of a run (the relay closes them): the run
// still ends on its own, and every message is either published or an error.
// QoS 1 notices it waiting for an acknowledgement, QoS 0 on a failed write.
func TestRunSurvivesLostConnections(t *testing.T) {
	broker := startMosquitto(t)
	for _, qos := range []byte{1, 0} {
		t.Run("qos"+strconv.Itoa(int(qos)), func(t *testing.T) { runCutByRelay(t, broker, qos) })
	}
}

func runCutByRelay(t *testing.T, broker string, qos byte) {
	relay := newTestRelay(t, broker)
	o := smallOptions(t, ScenarioFanout, relay.Addr())
	o.Subscribers, o.Messages, o.Timeout, o.QoS = 2, 10_000_000, 300*time.Millisecond, qos
	var progress syncBuffer
	o.Progress = &progress
	done := make(chan *Result, 1)
	go func() {
		res, err := Run(context.Background(), o)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- res
	}()
	waitFor(t, 10*time.Second, "a progress line", func() bool { return strings.Contains(progress.String(), "delivered") })
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res == nil {
			return
		}
		// The publisher noticed for sure; subscribers may still be reading
		// their backlog when the run closes them.
		if res.Disconnects < 1 || res.PublishErrors == 0 || res.Lost == 0 || res.Delivered == 0 {
			t.Errorf("result %+v: want disconnects, publish errors, some delivered and some lost", res)
		}
		if res.Published+res.PublishErrors != int64(o.Messages) {
			t.Errorf("published %d + errors %d != %d messages", res.Published, res.PublishErrors, o.Messages)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not end after its connections were cut")
	}
}
