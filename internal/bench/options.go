package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/moha-project/moha/internal/topic"
)

// Scenario names accepted in Options.Scenario.
const (
	ScenarioSeed     = "seed"
	ScenarioFanout   = "fanout"
	ScenarioFanin    = "fanin"
	ScenarioWildcard = "wildcard"
	ScenarioLocal    = "local"
)

// Limits that keep a mistyped flag from exhausting memory or the broker.
const (
	maxClients  = 100_000
	maxMessages = 1 << 31   // sequence numbers are uint32 on the wire
	maxSize     = 1 << 24   // 16 MiB payloads are already far beyond a benchmark
	maxPipeline = 1<<16 - 1 // MQTT packet identifiers bound what can be in flight
	// maxTopicBase leaves room under MQTT's 65535-byte topic limit for the
	// levels the scenarios append to Options.Topic.
	maxTopicBase = 60000
)

var (
	// ErrInvalidOptions wraps every problem Validate reports.
	ErrInvalidOptions = errors.New("bench: invalid options")
	// ErrUnknownScenario is returned for a scenario name not in Scenarios.
	ErrUnknownScenario = errors.New("bench: unknown scenario")
)

// Scenarios lists the scenario names in the order the docs present them.
var Scenarios = []string{ScenarioSeed, ScenarioFanout, ScenarioFanin, ScenarioWildcard, ScenarioLocal}

// Options describe one benchmark run. Start from DefaultOptions.
type Options struct {
	// URLs are the MQTT endpoints, "tcp://127.0.0.1:1883" or "127.0.0.1:1883";
	// client i of each kind connects to URLs[i % len(URLs)].
	URLs []string
	// SubscriberURLs, when set, are used for subscribers instead of URLs
	// (publish on one side, subscribe on the other).
	SubscriberURLs []string
	// Isolated says the endpoints are independent brokers: a subscriber is
	// expected to receive only what was published on its own address.
	Isolated bool
	// Scenario is one of Scenarios; it decides topics, filters and placement.
	Scenario string
	// Publishers is the number of publishing clients.
	Publishers int
	// Subscribers is the number of subscribing clients.
	Subscribers int
	// Messages is the number of messages each publisher sends.
	Messages int
	// Size is the payload size in bytes, at least HeaderSize.
	Size int
	// Payload is what follows the header: PayloadZeros (padding to Size) or
	// PayloadJSON (a telemetry document with realistic field names and
	// changing values; its size is its own, Size is ignored).
	Payload string
	// QoS of publishes and subscriptions: 0, 1 or 2.
	QoS byte
	// Topic is the publish topic (seed) or the topic base of the scenario;
	// the package doc says how each scenario uses it.
	Topic string
	// Persistent makes every subscriber keep a persistent session (clean
	// start 0, session expiry one hour) instead of a clean one.
	Persistent bool
	// Pipeline is the number of messages in flight per publisher; 1 waits
	// for each acknowledgement before the next publish.
	Pipeline int
	// Timeout is the longest wait for deliveries after the last publish.
	Timeout time.Duration
	// ClientPrefix prefixes every client id so that runs never collide;
	// empty means "moha-bench-<random>".
	ClientPrefix string
	// Progress receives a line each second while running; nil for none.
	Progress io.Writer
	// BeforePublish, when set, runs once every client is connected and
	// subscribed, before the first publish: a cluster uses it to wait until
	// the new subscriptions have reached every node. An error ends the run.
	BeforePublish func(ctx context.Context) error
	// AfterDrain, when set, runs once the last expected message arrived
	// (or the wait for it ended), before any client disconnects: a
	// comparison reads the processes' counters there, so that what they
	// spent on the messages alone is known.
	AfterDrain func(ctx context.Context)
}

// DefaultOptions returns the defaults of a scenario, with URLs set to a
// local broker on the standard port.
func DefaultOptions(scenario string) (Options, error) {
	o := Options{
		URLs:         []string{"tcp://127.0.0.1:1883"},
		Scenario:     scenario,
		Messages:     3000,
		Size:         100,
		QoS:          1,
		Pipeline:     1,
		Timeout:      10 * time.Second,
		ClientPrefix: randomClientPrefix(),
	}
	switch scenario {
	case ScenarioSeed:
		o.Publishers, o.Subscribers, o.Topic = 20, 500, "test_1/499"
	case ScenarioFanout:
		o.Publishers, o.Subscribers, o.Topic = 1, 6, "bench/fanout"
	case ScenarioFanin:
		o.Publishers, o.Subscribers, o.Topic = 6, 1, "bench/fanin"
	case ScenarioWildcard:
		o.Publishers, o.Subscribers, o.Topic = 4, 4, "bench/wc"
	case ScenarioLocal:
		o.Publishers, o.Subscribers, o.Topic = 4, 4, "bench/local"
	default:
		return Options{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownScenario, scenario, strings.Join(Scenarios, ", "))
	}
	return o, nil
}

// Validate reports every problem with the options at once, each naming its
// field, wrapped in ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(o.URLs) == 0 {
		add("URLs: at least one endpoint is required")
	}
	for _, list := range [][]string{o.URLs, o.SubscriberURLs} {
		for _, u := range list {
			if _, err := normalizeAddress(u); err != nil {
				add("URLs: %w", err)
			}
		}
	}
	if !knownScenario(o.Scenario) {
		add("Scenario: unknown %q (known: %s)", o.Scenario, strings.Join(Scenarios, ", "))
	}
	if o.Publishers < 1 || o.Publishers > maxClients {
		add("Publishers: %d, must be between 1 and %d", o.Publishers, maxClients)
	}
	if o.Subscribers < 1 || o.Subscribers > maxClients {
		add("Subscribers: %d, must be between 1 and %d", o.Subscribers, maxClients)
	}
	if o.Messages < 1 || o.Messages > maxMessages {
		add("Messages: %d, must be between 1 and %d", o.Messages, maxMessages)
	}
	if o.Size < HeaderSize || o.Size > maxSize {
		add("Size: %d bytes, must be between %d (the payload header) and %d", o.Size, HeaderSize, maxSize)
	}
	if o.QoS > 2 {
		add("QoS: %d, must be 0, 1 or 2", o.QoS)
	}
	if o.Payload != "" && o.Payload != PayloadZeros && o.Payload != PayloadJSON {
		add("Payload: %q, must be %q or %q", o.Payload, PayloadZeros, PayloadJSON)
	}
	if err := validatePublishTopic(o.Topic); err != nil {
		add("Topic: %w", err)
	} else if o.Scenario == ScenarioSeed && !strings.Contains(o.Topic, "/") {
		add("Topic: seed needs a topic with a '/' (subscribers use the part up to the last '/' as prefix), got %q", o.Topic)
	}
	if o.Pipeline < 1 || o.Pipeline > maxPipeline {
		add("Pipeline: %d, must be between 1 and %d", o.Pipeline, maxPipeline)
	}
	if o.Timeout <= 0 {
		add("Timeout: %s, must be positive", o.Timeout)
	}
	if strings.ContainsAny(o.ClientPrefix, "+#/") {
		add("ClientPrefix: %q must not contain '+', '#' or '/'", o.ClientPrefix)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
}

func knownScenario(name string) bool {
	for _, s := range Scenarios {
		if s == name {
			return true
		}
	}
	return false
}

// validatePublishTopic checks what the scenarios build topics from: a valid
// topic name (the topic package's rules) short enough that the levels the
// scenarios append keep it within MQTT's 65535 bytes.
func validatePublishTopic(t string) error {
	if err := topic.ValidateTopic(t); err != nil {
		return err
	}
	if len(t) > maxTopicBase {
		return fmt.Errorf("%d bytes, longer than %d (the scenarios append levels to it)", len(t), maxTopicBase)
	}
	return nil
}

// normalizeAddress turns "tcp://host:port", "mqtt://host:port" or
// "host:port" into "host:port".
func normalizeAddress(u string) (string, error) {
	addr := u
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		if scheme != "tcp" && scheme != "mqtt" {
			return "", fmt.Errorf("%q: scheme %q not supported (tcp or mqtt)", u, scheme)
		}
		addr = strings.TrimSuffix(rest, "/")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q: %w", u, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: bad port %q", u, port)
	}
	return net.JoinHostPort(host, port), nil
}

func randomClientPrefix() string {
	return "moha-bench-" + hex.EncodeToString(randomBytes(4))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return b
}
