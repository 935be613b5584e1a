package hostport

import "testing"

func TestCheck(t *testing.T) {
	for _, v := range []string{"127.0.0.1:9851", ":8750", "[2001:db8::1]:80", "192.0.2.1:0"} {
		if err := Check(v); err != nil {
			t.Errorf("Check(%q) = %v, want nil", v, err)
		}
	}
	for _, v := range []string{"", "8750", "localhost:80", "192.0.2.1:65536", "192.0.2.1:x", "192.0.2.1"} {
		if err := Check(v); err == nil {
			t.Errorf("Check(%q) accepted", v)
		}
	}
}
