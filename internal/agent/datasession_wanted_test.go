package agent

import (
	"fmt"
	"maps"
	"testing"

	"github.com/moha-project/moha/internal/datasub"
	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/retained"
)

// TestWantedAggregates: with interest, a dense set of peer filters is held
// as one wildcard, a wildcard a peer wants stays, and a topic holding a
// retained message stays subscribed exactly (with its replay) even when
// the aggregate covers it.
func TestWantedAggregates(t *testing.T) {
	r := forward.NewRouter([]string{"p"}, true)
	fs := []string{"other/+", "lone/1/cmd"}
	for i := range datasub.AggregateMin {
		fs = append(fs, fmt.Sprintf("devices/%d/cmd", i))
	}
	r.Apply("p", true, fs, nil)
	store := retained.NewStore()
	store.LearnScanned(&message.Message{Topic: "devices/7/cmd", Payload: []byte("v"), Retain: true})
	f := &dataFilters{router: r, retained: store}
	want := map[string]bool{"devices/+/cmd": false, "other/+": false, "lone/1/cmd": false, "devices/7/cmd": true}
	if got := f.wanted(); !maps.Equal(got, want) {
		t.Fatalf("wanted %v, want %v", got, want)
	}
	if d := f.status(true); d.AggregatedWildcards != 1 || d.AggregatedFilters != datasub.AggregateMin {
		t.Fatalf("status %+v, want 1 wildcard for %d filters", d, datasub.AggregateMin)
	}
}
