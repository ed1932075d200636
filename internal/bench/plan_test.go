package bench

import (
	"testing"

	"github.com/moha-project/moha/internal/topic"
)

// TestTopicMatches: the filters the scenarios use match what they must
// (topic.Match, the one matcher).
func TestTopicMatches(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // '+' matches an empty level
		{"a/+", "a/b/c", false},
		{"+/+", "a/b", true},
		{"a/#", "a", true}, // [MQTT-4.7.1-2]
		{"a/#", "a/b/c", true},
		{"a/#", "b/a", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"bench/wc/+/data", "bench/wc/3/data", true},
		{"bench/wc/+/data", "bench/wc/3/other", false},
		{"test_1/499", "test_1/499", true},
		{"test_1/49", "test_1/499", false},
	}
	for _, tc := range cases {
		if got := topic.Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("topic.Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestBuildPlanSeed(t *testing.T) {
	o, _ := DefaultOptions(ScenarioSeed)
	o.URLs = []string{"tcp://127.0.0.1:1", "127.0.0.1:2"}
	p, err := buildPlan(o, "x")
	if err != nil {
		t.Fatal(err)
	}
	if p.Expected != 20*3000 {
		t.Errorf("seed Expected = %d, want 60000", p.Expected)
	}
	if s := p.Subscribers[499]; s.Topic != "test_1/499" || s.Address != "127.0.0.1:2" || s.ClientID != "x-s499" {
		t.Errorf("subscriber 499 = %+v", s)
	}
	if pb := p.Publishers[1]; pb.Topic != "test_1/499" || pb.Address != "127.0.0.1:2" {
		t.Errorf("publisher 1 = %+v", pb)
	}
	o.Isolated = true // subscriber 499 is on :2 with the odd publishers only
	if p, _ = buildPlan(o, "x"); p.Expected != 10*3000 {
		t.Errorf("isolated seed Expected = %d, want 30000", p.Expected)
	}
}

func TestBuildPlanTopics(t *testing.T) {
	cases := []struct {
		scenario         string
		pub1, sub0, sub1 string
	}{
		{ScenarioFanout, "bench/fanout", "bench/fanout", "bench/fanout"},
		{ScenarioFanin, "bench/fanin/1", "bench/fanin/+", "bench/fanin/+"},
		{ScenarioWildcard, "bench/wc/1/data", "bench/wc/+/data", "bench/#"},
		{ScenarioLocal, "bench/local/1/1", "bench/local/0/#", "bench/local/1/#"},
	}
	for _, tc := range cases {
		o, _ := DefaultOptions(tc.scenario)
		o.URLs = []string{"127.0.0.1:1", "127.0.0.1:2"}
		o.Publishers, o.Subscribers = 2, 2
		p, err := buildPlan(o, "x")
		if err != nil {
			t.Fatal(err)
		}
		if got := [3]string{p.Publishers[1].Topic, p.Subscribers[0].Topic, p.Subscribers[1].Topic}; got != [3]string{tc.pub1, tc.sub0, tc.sub1} {
			t.Errorf("%s: topics %q, want %q", tc.scenario, got, [3]string{tc.pub1, tc.sub0, tc.sub1})
		}
	}
}

func TestBuildPlanSubscriberURLs(t *testing.T) {
	o, _ := DefaultOptions(ScenarioFanout)
	o.URLs, o.SubscriberURLs = []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}
	p, _ := buildPlan(o, "x")
	if p.Subscribers[0].Address != "127.0.0.1:2" || p.Publishers[0].Address != "127.0.0.1:1" {
		t.Errorf("placement %+v / %+v", p.Subscribers[0], p.Publishers[0])
	}
	if p.Expected != 6*3000 {
		t.Errorf("Expected = %d, want 18000", p.Expected)
	}
	o.Isolated = true
	if p, _ = buildPlan(o, "x"); p.Expected != 0 {
		t.Errorf("isolated Expected = %d, want 0", p.Expected)
	}
}
