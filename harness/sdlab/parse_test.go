package sdlab

import (
	"testing"
	"time"
)

func TestParseJournalJSON(t *testing.T) {
	in := `{"__CURSOR":"s=1;i=1","__REALTIME_TIMESTAMP":"1700000000000000","_SYSTEMD_UNIT":"vipkeeper-agent.service","_COMM":"vipkeeper-agent","_PID":"42","PRIORITY":"6","MESSAGE":"{\"level\":\"INFO\",\"msg\":\"agent started\"}"}
{"__CURSOR":"s=1;i=2","UNIT":"keepalived.service","_PID":"1","MESSAGE":"Reloaded keepalived.service."}
{"__CURSOR":"s=1;i=3","_PID":"7","PRIORITY":"3","MESSAGE":[104,105,255]}

`
	got, err := ParseJournalJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []JournalEntry{
		{Cursor: "s=1;i=1", Time: time.UnixMicro(1700000000000000), Unit: "vipkeeper-agent.service", Comm: "vipkeeper-agent", PID: 42, Priority: 6, Message: `{"level":"INFO","msg":"agent started"}`},
		{Cursor: "s=1;i=2", Unit: "keepalived.service", PID: 1, Priority: 6, Message: "Reloaded keepalived.service."},
		{Cursor: "s=1;i=3", PID: 7, Priority: 3, Message: "hi\xff"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := ParseJournalJSON("{not json}\n"); err == nil {
		t.Error("ParseJournalJSON accepted a line that is not JSON")
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/tmp/a`, `/tmp/a`},
		{`/tmp/with\040space`, `/tmp/with space`},
		{`/tmp/tab\011x`, "/tmp/tab\tx"},
		{`/tmp/back\134slash`, `/tmp/back\slash`},
		{`/tmp/short\04`, `/tmp/short\04`},
		{`/tmp/bad\09x`, `/tmp/bad\09x`},
	}
	for _, tt := range tests {
		if got := unescapeMount(tt.in); got != tt.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
