package bench

import (
	"strconv"
	"strings"

	"github.com/moha-project/moha/internal/topic"
)

// endpoint is one client's place in the run: where it connects and the
// topic it publishes to (publishers) or the filter it subscribes (subscribers).
type endpoint struct {
	ClientID string
	Address  string // host:port, normalized
	URLIndex int    // index of Address in the client's list of URLs
	Topic    string // publish topic or subscription filter
}

// plan is a scenario laid out on concrete clients.
type plan struct {
	Publishers  []endpoint
	Subscribers []endpoint
	Isolated    bool
	Messages    int
	// Expected is the number of deliveries the scenario calls for.
	Expected int64
}

// buildPlan lays the scenario of validated options out on clients.
func buildPlan(o Options, prefix string) (plan, error) {
	pubAddrs, err := normalizeAll(o.URLs)
	if err != nil {
		return plan{}, err
	}
	subAddrs := pubAddrs
	if len(o.SubscriberURLs) > 0 {
		if subAddrs, err = normalizeAll(o.SubscriberURLs); err != nil {
			return plan{}, err
		}
	}
	p := plan{Isolated: o.Isolated, Messages: o.Messages}
	for i := range o.Publishers {
		u := i % len(pubAddrs)
		p.Publishers = append(p.Publishers, endpoint{
			ClientID: prefix + "-p" + strconv.Itoa(i),
			Address:  pubAddrs[u],
			URLIndex: u,
			Topic:    publishTopic(o.Scenario, o.Topic, i, u),
		})
	}
	for i := range o.Subscribers {
		u := i % len(subAddrs)
		p.Subscribers = append(p.Subscribers, endpoint{
			ClientID: prefix + "-s" + strconv.Itoa(i),
			Address:  subAddrs[u],
			URLIndex: u,
			Topic:    subscribeFilter(o.Scenario, o.Topic, i, u),
		})
	}
	p.Expected = p.expectedStreams() * int64(o.Messages)
	return p, nil
}

func normalizeAll(urls []string) ([]string, error) {
	out := make([]string, len(urls))
	for i, u := range urls {
		a, err := normalizeAddress(u)
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// publishTopic is the topic publisher i (on URL index u) publishes to.
func publishTopic(scenario, base string, i, u int) string {
	switch scenario {
	case ScenarioFanin:
		return base + "/" + strconv.Itoa(i)
	case ScenarioWildcard:
		return base + "/" + strconv.Itoa(i) + "/data"
	case ScenarioLocal:
		return base + "/" + strconv.Itoa(u) + "/" + strconv.Itoa(i)
	default: // seed, fanout
		return base
	}
}

// subscribeFilter is the filter subscriber i (on URL index u) subscribes.
func subscribeFilter(scenario, base string, i, u int) string {
	switch scenario {
	case ScenarioSeed:
		return base[:strings.LastIndexByte(base, '/')+1] + strconv.Itoa(i)
	case ScenarioFanin:
		return base + "/+"
	case ScenarioWildcard:
		if i%2 == 0 {
			return base + "/+/data"
		}
		first, _, _ := strings.Cut(base, "/")
		return first + "/#"
	case ScenarioLocal:
		return base + "/" + strconv.Itoa(u) + "/#"
	default: // fanout
		return base
	}
}

// expects reports whether subscriber s should receive publisher p's messages.
func (p *plan) expects(s, pub int) bool {
	sub, pb := p.Subscribers[s], p.Publishers[pub]
	if p.Isolated && sub.Address != pb.Address {
		return false
	}
	return topic.Match(sub.Topic, pb.Topic)
}

// expectedStreams counts the (subscriber, publisher) pairs that match.
// Clients are grouped by (address, topic) first: the seed has 500 distinct
// filters but one publish topic, so this stays cheap at any client count.
func (p *plan) expectedStreams() int64 {
	type group struct{ address, topic string }
	count := func(eps []endpoint) map[group]int64 {
		m := make(map[group]int64)
		for _, e := range eps {
			m[group{e.Address, e.Topic}]++
		}
		return m
	}
	subs, pubs := count(p.Subscribers), count(p.Publishers)
	var n int64
	for s, ns := range subs {
		for pb, np := range pubs {
			if p.Isolated && s.address != pb.address {
				continue
			}
			if topic.Match(s.topic, pb.topic) {
				n += ns * np
			}
		}
	}
	return n
}
