package config

import (
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"0", 0, true},
		{"512KiB", 512 << 10, true},
		{"64MiB", 64 << 20, true},
		{"64 mib", 64 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2TiB", 2 << 40, true},
		{"100B", 100, true},
		{"64MB", 0, false},
		{"1.5GiB", 0, false},
		{"-1", 0, false},
		{"MiB", 0, false},
		{"", 0, false},
		{"8388608TiB", 0, false}, // 2^63: overflows int64
		{"9223372036854775808", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	tests := map[ByteSize]string{0: "0", 1: "1", 1024: "1KiB", 1536: "1536", 64 << 20: "64MiB", 3 << 30: "3GiB", 1 << 40: "1TiB"}
	for in, want := range tests {
		if got := in.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestUnitsYAMLRoundTrip(t *testing.T) {
	type doc struct {
		D Duration `yaml:"d"`
		B ByteSize `yaml:"b"`
	}
	for _, in := range []doc{
		{Duration(1500 * time.Millisecond), 1536},
		{Duration(2 * time.Minute), 64 << 20},
		{Duration(-time.Second), 7},
	} {
		data, err := yaml.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out doc
		if err := yaml.Unmarshal(data, &out); err != nil || out != in {
			t.Errorf("round trip of %+v via %q = %+v, %v", in, data, out, err)
		}
	}
}
