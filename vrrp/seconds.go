package vrrp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Seconds is a non-negative duration written in JSON (and in keepalived.conf)
// as a decimal number of seconds with at most three decimals, e.g. 1, 0.1,
// 2.5. It is stored exactly as milliseconds: no float rounding.
type Seconds int64

// MaxSeconds bounds every Seconds value (one day).
const MaxSeconds = Seconds(86400 * 1000)

// Duration converts to time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Millisecond }

// Millis is the value in milliseconds.
func (s Seconds) Millis() int64 { return int64(s) }

// String renders the decimal form without trailing zeros: "1", "0.1", "2.25".
func (s Seconds) String() string {
	whole, frac := int64(s)/1000, int64(s)%1000
	if frac == 0 {
		return strconv.FormatInt(whole, 10)
	}
	f := strings.TrimRight(fmt.Sprintf("%03d", frac), "0")
	return strconv.FormatInt(whole, 10) + "." + f
}

// MarshalJSON writes the decimal number.
func (s Seconds) MarshalJSON() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON reads a JSON number of seconds.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	v, err := ParseSeconds(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

var errSeconds = errors.New("must be a number of seconds with at most 3 decimals, 0 to 86400")

// ParseSeconds parses "2", "0.1", "2.500". Exponents, signs and more than
// three decimals are refused.
func ParseSeconds(text string) (Seconds, error) {
	whole, frac, hasFrac := strings.Cut(text, ".")
	if whole == "" || !allDigits(whole) || len(whole) > 6 {
		return 0, fmt.Errorf("%q %w", text, errSeconds)
	}
	if hasFrac && (frac == "" || len(frac) > 3 || !allDigits(frac)) {
		return 0, fmt.Errorf("%q %w", text, errSeconds)
	}
	w, _ := strconv.ParseInt(whole, 10, 64)
	ms := w * 1000
	if hasFrac {
		f, _ := strconv.ParseInt((frac + "00")[:3], 10, 64)
		ms += f
	}
	if Seconds(ms) > MaxSeconds {
		return 0, fmt.Errorf("%q %w", text, errSeconds)
	}
	return Seconds(ms), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
