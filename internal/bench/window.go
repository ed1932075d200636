package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
)

// WindowOptions configure MeasureWindow: whether a message published on one
// node the moment a subscription on another node was acknowledged arrives,
// as it does on one broker.
type WindowOptions struct {
	Iterations  int      // subscribe-then-publish pairs per run (default 1000)
	Settings    []string // data_subscription values, one run each (default all, interest)
	AgentBinary string   // the moha binary the agents run as
	Dir         string   // work directory (a temporary one when empty)
	Progress    io.Writer
}

// WindowRow is one run's figures.
type WindowRow struct {
	Setting    string        `json:"data_subscription"`
	Iterations int           `json:"iterations"`
	Lost       int           `json:"lost"`
	Replayed   float64       `json:"replayed"`       // messages node1 sent node2 from its replay history
	P50        time.Duration `json:"arrival_p50_ns"` // SUBACK to arrival, delivered messages
	P99        time.Duration `json:"arrival_p99_ns"`
}

// MeasureWindow starts a two-node moha cluster per setting. For each
// iteration a client on node2 subscribes to a fresh topic and, as soon as
// its SUBACK is in, a client on node1 publishes one QoS 1 message to it;
// the row counts the messages that never arrive and the time from SUBACK to
// arrival of the others.
func MeasureWindow(ctx context.Context, o WindowOptions) ([]WindowRow, error) {
	o.Iterations = orDefault(o.Iterations, 1000)
	if len(o.Settings) == 0 {
		o.Settings = []string{config.DataSubscriptionAll, config.DataSubscriptionInterest}
	}
	if o.AgentBinary == "" {
		return nil, errors.New("bench: window: no agent binary")
	}
	var rows []WindowRow
	for _, s := range o.Settings {
		if s != config.DataSubscriptionAll && s != config.DataSubscriptionInterest {
			return rows, fmt.Errorf("bench: window: data_subscription %q: want %q or %q", s, config.DataSubscriptionAll, config.DataSubscriptionInterest)
		}
		row, err := measureWindowOnce(ctx, o, s)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func measureWindowOnce(ctx context.Context, o WindowOptions, setting string) (WindowRow, error) {
	row := WindowRow{Setting: setting, Iterations: o.Iterations}
	dir, err := os.MkdirTemp(o.Dir, "moha-window-")
	if err != nil {
		return row, fmt.Errorf("bench: window: %w", err)
	}
	defer os.RemoveAll(dir)
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: -1, Dir: dir, AgentBinary: o.AgentBinary,
		Logger: slog.New(slog.DiscardHandler), Configure: func(cl *config.Cluster) { cl.DataSubscription = setting }})
	if err != nil {
		return row, err
	}
	defer c.Close()
	origin, subscriber := c.Config.Nodes[0], c.Config.Nodes[1]
	if err := waitSettledAgents(ctx, []string{origin.HTTP, subscriber.HTTP}); err != nil {
		return row, err
	}
	progressf(o.Progress, "window (%s): %d subscribe-then-publish pairs", setting, o.Iterations)
	arrivals := newArrivals()
	sub, err := connectClient(ctx, endpoint{ClientID: "moha-bench-window-sub", Address: subscriber.Broker.Address}, paho.ClientConfig{
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			arrivals.add(r.Packet.Topic, time.Now())
			return true, nil
		}},
	}, 1000)
	if err != nil {
		return row, err
	}
	defer func() { _ = sub.Disconnect(&paho.Disconnect{}) }()
	pub, err := connectClient(ctx, endpoint{ClientID: "moha-bench-window-pub", Address: origin.Broker.Address}, paho.ClientConfig{}, 100)
	if err != nil {
		return row, err
	}
	defer func() { _ = pub.Disconnect(&paho.Disconnect{}) }()

	subacks := make(map[string]time.Time, o.Iterations)
	for i := range o.Iterations {
		topic := "bench/window/" + setting + "/" + strconv.Itoa(i)
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			return row, fmt.Errorf("bench: window: subscribe: %w", err)
		}
		subacks[topic] = time.Now()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("w")}); err != nil {
			return row, fmt.Errorf("bench: window: publish: %w", err)
		}
	}
	arrivals.waitFor(ctx, o.Iterations, 5*time.Second)
	var delays []int64 // nanoseconds
	for topic, at := range arrivals.snapshot() {
		if suback, ok := subacks[topic]; ok {
			delays = append(delays, int64(at.Sub(suback)))
		}
	}
	slices.Sort(delays)
	row.Lost = o.Iterations - len(delays)
	row.P50, row.P99 = percentile(delays, 0.50), percentile(delays, 0.99)
	if st, err := fetchMetric(ctx, origin.HTTP, "moha_replayed_messages_total"); err == nil {
		row.Replayed = st
	}
	progressf(o.Progress, "window (%s): %d of %d lost", setting, row.Lost, o.Iterations)
	return row, nil
}

// arrivals records the first arrival time per topic.
type arrivals struct {
	mu    sync.Mutex
	first map[string]time.Time
	more  chan struct{}
}

func newArrivals() *arrivals {
	return &arrivals{first: map[string]time.Time{}, more: make(chan struct{}, 1)}
}

func (a *arrivals) add(topic string, at time.Time) {
	a.mu.Lock()
	if _, ok := a.first[topic]; !ok {
		a.first[topic] = at
	}
	a.mu.Unlock()
	select {
	case a.more <- struct{}{}:
	default:
	}
}

// waitFor waits until n topics arrived, or nothing new came for quiet.
func (a *arrivals) waitFor(ctx context.Context, n int, quiet time.Duration) {
	for {
		a.mu.Lock()
		done := len(a.first) >= n
		a.mu.Unlock()
		if done {
			return
		}
		select {
		case <-a.more:
		case <-time.After(quiet):
			return
		case <-ctx.Done():
			return
		}
	}
}

func (a *arrivals) snapshot() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]time.Time, len(a.first))
	for k, v := range a.first {
		out[k] = v
	}
	return out
}

// WriteWindowTable prints the rows as a table.
func WriteWindowTable(w io.Writer, rows []WindowRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "data_subscription\tpairs\tlost\treplayed\tSUBACK to arrival p50\tp99\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%v\t%v\t\n", r.Setting, r.Iterations, r.Lost, r.Replayed,
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond))
	}
	return tw.Flush()
}

// fetchMetric returns the sum of an agent's series named name (all label
// sets), read from its /metrics.
func fetchMetric(ctx context.Context, httpAddr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("agent metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("agent metrics: %w", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}
