package agent

import (
	"context"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestNotifyOnlyForRenderedInstance: a notify for a vrrp_instance other
// than the one the agent rendered (VI_web) is not recorded, so it cannot
// become this group's claim; the rendered instance's still is.
func TestNotifyOnlyForRenderedInstance(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.link.set("192.0.2.11/24", "192.0.2.10/24")
	for _, name := range []string{"VI_other", "VI_web2", "vi_web", "web"} {
		res, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: []string{"INSTANCE", name, "MASTER", "100"}, At: time.Now()})
		if err != nil || res.Outcome != "other instance" || res.Transition != nil {
			t.Errorf("notify for %s: %+v %v, want outcome \"other instance\"", name, res, err)
		}
	}
	if hist := h.history(); len(hist) != 0 {
		t.Fatalf("history after notifies for other instances = %+v, want none", hist)
	}
	if st := h.status(); st.Role == vrrp.RoleMaster {
		t.Errorf("role became MASTER from another instance's notify")
	}
	res, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", "MASTER", "100"}, At: time.Now()})
	if err != nil || res.Outcome != "recorded" {
		t.Fatalf("notify for VI_web: %+v %v, want recorded", res, err)
	}
	if hist := h.history(); len(hist) != 1 || hist[0].Instance != "VI_web" || hist[0].To != vrrp.RoleMaster {
		t.Errorf("history = %+v, want VI_web MASTER", hist)
	}
}
