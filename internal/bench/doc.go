// Package bench owns the load tool behind `moha bench`: it starts MQTT
// publishers and subscribers against any endpoints (one Mosquitto, a native
// bridge pair, a moha cluster), publishes a scenario's messages, and reports
// what arrived — lost, duplicated and out-of-order deliveries, rates and
// end-to-end latency — plus Relay, a counting TCP relay used to measure the
// bytes that cross between brokers identically for every setup.
//
// Every payload starts with a fixed binary header (see HeaderSize): a magic,
// the run's random id, the publisher index, a per-publisher sequence number
// and the send time in unix nanoseconds. Subscribers keep, per (subscriber,
// publisher) stream, which sequence numbers arrived, so that
//
//	lost       = expected - distinct deliveries
//	duplicated = arrivals of a sequence already seen on the stream
//	out-of-order = first arrivals with a sequence lower than the highest seen
//
// Arrivals that are not this run's, or that come on a stream the scenario
// does not expect (say a bridged broker in Isolated mode), are counted as
// stray and nothing else.
//
// Clients are spread round-robin: client i of a kind connects to
// urls[i % len(urls)] (subscribers use SubscriberURLs when set). Every client
// connects and every subscriber has its SUBACK before the first publish. The
// run ends when every expected delivery arrived, or Timeout after the last
// publish completed. With P publishers, S subscribers and M messages each:
//
//   - seed: the original experiment. Subscriber i subscribes <prefix><i>,
//     where prefix is Topic up to its last '/' ("test_1/"); every publisher
//     publishes to Topic ("test_1/499"). Defaults P=20, S=500, M=3000.
//     Expected: M × P × (subscribers whose filter equals Topic) — 60000.
//   - fanout: publishers (default 1, so one on urls[0]) publish to Topic
//     ("bench/fanout"); S subscribers (default 6) across all urls subscribe
//     to it. Expected: M × P × S.
//   - fanin: publisher i (default P=6, across all urls) publishes to
//     <Topic>/<i> ("bench/fanin/<i>"); subscribers (default 1, on urls[0])
//     subscribe <Topic>/+. Expected: M × P × S.
//   - wildcard: publisher i (default P=4) publishes to <Topic>/<i>/data
//     ("bench/wc/<i>/data"); subscribers (default 4) alternate the filters
//     <Topic>/+/data and <first level of Topic>/# ("bench/#").
//     Expected: M × P × S.
//   - local: a publisher on url u publishes to <Topic>/<u>/<i>
//     ("bench/local/<u>/<i>"), a subscriber on url u subscribes <Topic>/<u>/#;
//     nothing needs to cross between nodes. Defaults P=4, S=4. Expected:
//     M × Σ over subscribers of the publishers on the subscriber's url index.
//
// With Isolated set (the endpoints are independent brokers, not one cluster)
// a stream is expected only when publisher and subscriber use the same
// address, so fanout and wildcard can be checked against plain brokers.
//
// Publishers and subscribers are the agents' lean MQTT v5 session (package
// session: buffered reads, batched writes, a completion per publish), so
// that the load generator takes as little of the machine as it can from
// the brokers it measures. Pipeline N keeps N messages in flight per
// publisher on one ordered stream: publishes are written in sequence
// order and each completion (PUBACK, PUBCOMP; QoS 0: written) arrives on
// one channel per publisher, so order stays measurable. N = 1 waits for
// each acknowledgement before the next publish, as the seed did.
//
// Compare (`moha bench compare`) runs one workload in turn against one
// Mosquitto, N (default two) joined by Mosquitto's own bridge (`topic #
// both 2`, a star around the first beyond two) and N with moha agents (a
// full mesh), all started and stopped here (bridge.go for the plain
// brokers, package launch for moha), with Relays on the paths between the
// nodes, every connection through one, so that bytes are counted the same
// way for each, and the CPU time of every broker and agent process.
// docs/BENCHMARKS.md has the figures.
package bench
