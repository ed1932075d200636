package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/plainbroker"
)

// The plain brokers of `moha bench compare`: one Mosquitto alone, and a
// star of them joined by Mosquitto's own bridge, each bridge connection
// through a counting Relay of its own.

// brokerStartAttempts bounds the retries when a free port chosen for a
// broker is taken by someone else before mosquitto binds it.
const brokerStartAttempts = 3

// brokerStartTimeout bounds the wait for one broker to listen.
const brokerStartTimeout = 10 * time.Second

// probeInterval is how often the bridge probe republishes until the probe
// message crosses.
const probeInterval = 200 * time.Millisecond

// errBridgeNotConnected is returned when the probe never crosses the bridge.
var errBridgeNotConnected = errors.New("bench: native bridge did not connect")

// compareLogTypes are mosquitto's default log types but "information",
// whose lines (several per client connecting or leaving) would fill a
// compared broker's log with every connection of a run.
var compareLogTypes = []string{"log_type error", "log_type warning", "log_type notice"}

// brokerConfig renders a compared broker: the plain broker
// (internal/plainbroker) with its log types, plus extra (a bridge section,
// or nothing).
func brokerConfig(name, addr string, extra []string) (string, error) {
	return plainbroker.Config(plainbroker.Options{
		Addr:      addr,
		Comment:   "moha bench compare: broker " + name,
		User:      plainbroker.RunAs(),
		MaxQueued: config.Default().MaxQueuedMessages, // as moha's nodes: a burst queues, not dropped
		Extra:     append(slices.Clone(compareLogTypes), extra...),
	})
}

// bridgeSection is a spoke's side of the native bridge: everything
// crosses, both ways, through the relay in front of the hub. name must be
// unique among the spokes: it is the bridge's client id on the hub, where
// a second connection with the same id would take the first one over.
//
// A message published on one spoke reaches the others through the hub: the
// hub delivers it to every bridge subscribed to "#" except the one it came
// from (try_private marks the connection as a bridge, and the hub gives a
// bridge's MQTT 3.1.1 subscriptions no-local), and a spoke does not send
// what it received from the hub back out on the same bridge.
func bridgeSection(name, relayAddr string) []string {
	return []string{
		"",
		"connection " + name,
		"address " + relayAddr,
		"topic # both 2",
		"cleansession true",
		"try_private true",
		"bridge_protocol_version mqttv311",
		"notifications false",
		"start_type automatic",
		"restart_timeout 1",
	}
}

// startBroker writes dir/<name>.conf and starts mosquitto on a free port,
// returning the process and its address once it listens; extra is appended
// to the config.
func startBroker(ctx context.Context, bin, dir, name string, extra []string) (*launch.Process, string, error) {
	var lastErr error
	for range brokerStartAttempts {
		p, addr, err := tryStartBroker(ctx, bin, dir, name, extra)
		if err == nil {
			return p, addr, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", fmt.Errorf("start broker %s: %w", name, lastErr)
}

func tryStartBroker(ctx context.Context, bin, dir, name string, extra []string) (*launch.Process, string, error) {
	addr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		return nil, "", err
	}
	text, err := brokerConfig(name, addr, extra)
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, "", fmt.Errorf("write broker config: %w", err)
	}
	p, err := launch.Start(name, filepath.Join(dir, "logs", name+".log"), bin, "-c", cfg)
	if err != nil {
		return nil, "", err
	}
	wait, cancel := context.WithTimeout(ctx, brokerStartTimeout)
	defer cancel()
	if err := launch.WaitTCP(wait, addr, p); err != nil {
		p.Stop(stopGrace)
		return nil, "", err
	}
	return p, addr, nil
}

// waitBridge returns once a message published on each spoke reaches a
// subscriber on the hub and one published on the hub reaches a subscriber
// on each spoke: every bridge is connected and its subscription on the hub
// is in place, so messages also cross from spoke to spoke.
func waitBridge(ctx context.Context, hub string, spokes []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prefix := randomClientPrefix() + "-probe"
	for i, spoke := range spokes {
		id := fmt.Sprintf("%s%d", prefix, i+1)
		if err := probe(ctx, id+"-in", spoke, hub); err != nil {
			return fmt.Errorf("%w (from %s to %s): %w", errBridgeNotConnected, spoke, hub, err)
		}
		if err := probe(ctx, id+"-out", hub, spoke); err != nil {
			return fmt.Errorf("%w (from %s to %s): %w", errBridgeNotConnected, hub, spoke, err)
		}
	}
	return nil
}

// probe subscribes a unique topic on `to` and publishes to it on `from`
// every probeInterval until one copy arrives or ctx ends.
func probe(ctx context.Context, id, from, to string) error {
	topic := "moha-bench/probe/" + id
	arrived := make(chan struct{}, 1)
	sub, err := connectSubscriber(ctx, endpoint{ClientID: id + "-s", Address: to, Topic: topic}, 1, false,
		func([]byte) {
			select {
			case arrived <- struct{}{}:
			default:
			}
		})
	if err != nil {
		return err
	}
	defer closeSession(sub)
	pub, err := connectClient(ctx, endpoint{ClientID: id + "-p", Address: from}, paho.ClientConfig{}, publisherReceiveMaximum)
	if err != nil {
		return err
	}
	defer closeClient(pub)
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		// QoS 0: a probe that does not cross is simply sent again.
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte("probe")}); err != nil && ctx.Err() == nil {
			return fmt.Errorf("publish probe: %w", err)
		}
		select {
		case <-arrived:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
