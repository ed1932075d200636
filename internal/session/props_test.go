package session

import (
	"fmt"
	"testing"
)

// TestRefusalDecisions: which broker refusals are worth a retry.
func TestRefusalDecisions(t *testing.T) {
	for _, tc := range []struct {
		code      byte
		transient bool
	}{
		{0x80, true}, {0x83, true}, {0x97, true},
		{0x87, false}, {0x90, false}, {0x95, false}, {0x99, false}, {0x91, false},
	} {
		err := error(&reasonError{what: "publish", code: tc.code})
		if !IsRejected(err) || IsTransient(err) != tc.transient {
			t.Errorf("code %#x: rejected %v, transient %v, want transient %v", tc.code, IsRejected(err), IsTransient(err), tc.transient)
		}
		if got := RefusalReason(err); got != fmt.Sprintf("0x%02x", tc.code) {
			t.Errorf("code %#x: reason %q", tc.code, got)
		}
	}
	if IsTransient(errInvalidMessage) || RefusalReason(errInvalidMessage) != "invalid" {
		t.Error("a message refused before sending is not transient and is named invalid")
	}
}
