package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in YAML as a Go duration string ("2m", "500ms").
// A bare number is refused: "30" could mean seconds or nanoseconds, and guessing wrong
// silently is worse than an error.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d the way time.Duration does ("2m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string. Errors are returned as *yaml.TypeError so the
// decoder keeps going and reports every bad field of the file at once, with its line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return typeError(n, "%s is not a duration string like \"2m\" or \"500ms\"", quoteValue(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeError(n, "%q is not a duration like \"2m\" or \"500ms\"", n.Value)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a number of bytes, written in YAML as an integer (1048576) or with a
// binary unit ("512KiB", "64MiB", "1GiB").
type ByteSize int64

// Binary units, largest first so String picks the largest exact one.
var byteUnits = []struct {
	suffix string
	size   int64
}{
	{"TiB", 1 << 40},
	{"GiB", 1 << 30},
	{"MiB", 1 << 20},
	{"KiB", 1 << 10},
	{"B", 1},
}

// String formats b with the largest binary unit that divides it exactly ("64MiB"),
// or as a plain number of bytes.
func (b ByteSize) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range byteUnits[:len(byteUnits)-1] {
		if int64(b)%u.size == 0 {
			return strconv.FormatInt(int64(b)/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalYAML writes b as a string with a unit when one divides it, else as an integer.
func (b ByteSize) MarshalYAML() (any, error) {
	s := b.String()
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	return s, nil
}

// UnmarshalYAML reads an integer or a string with a binary unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!str") {
		return typeError(n, "%s is not a size like 1048576 or \"64MiB\"", quoteValue(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return typeError(n, "%v", err)
	}
	*b = v
	return nil
}

// ParseByteSize parses "1048576", "512KiB", "64 MiB", "1GiB" (units are powers of 1024 and
// case-insensitive). Decimal units (KB, MB, GB) are refused rather than guessed at.
func ParseByteSize(s string) (ByteSize, error) {
	text := strings.TrimSpace(s)
	digits := text
	multiplier := int64(1)
	for _, u := range byteUnits {
		if len(text) > len(u.suffix) && strings.EqualFold(text[len(text)-len(u.suffix):], u.suffix) {
			digits = strings.TrimSpace(text[:len(text)-len(u.suffix)])
			multiplier = u.size
			break
		}
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a size like 1048576, \"512KiB\", \"64MiB\" or \"1GiB\"", s)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/multiplier {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * multiplier), nil
}

// typeError reports a bad value at its line as a *yaml.TypeError, which the decoder
// collects instead of stopping at the first one.
func typeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

// quoteValue describes a node for an error message.
func quoteValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return "a " + kindName(n.Kind)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	default:
		return "document"
	}
}
