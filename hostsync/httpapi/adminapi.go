package httpapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// AdminAPI serves the admin API (api.PathAdmin*) that vipctl talks to.
type AdminAPI struct {
	svc *inventory.Inventory
	eng *ownership.Engine
	log *slog.Logger
	mux *http.ServeMux
}

// NewAdminAPI returns the admin API handler. It does not check who calls:
// serve it on the socket from ListenAdmin, through RequireRoot. The
// admin operations are svc's; the status is eng's.
func NewAdminAPI(svc *inventory.Inventory, eng *ownership.Engine, log *slog.Logger) *AdminAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &AdminAPI{svc: svc, eng: eng, log: log, mux: http.NewServeMux()}
	m := a.mux
	m.HandleFunc("GET "+api.PathAdminStatus, func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(eng.Status(r.Context()))
	})
	m.HandleFunc("GET "+api.PathAdminNetworks, func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(svc.ListNetworks(r.Context()))
	})
	m.HandleFunc("POST "+api.PathAdminNetworks, func(w http.ResponseWriter, r *http.Request) {
		var req api.NetworkCreate
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.CreateNetwork(r.Context(), req))
		}
	})
	m.HandleFunc("GET "+api.PathAdminGuests, func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(svc.ListGuests(r.Context()))
	})
	m.HandleFunc("POST "+api.PathAdminGuests, func(w http.ResponseWriter, r *http.Request) {
		var req api.GuestRegister
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.RegisterGuest(r.Context(), req))
		}
	})
	m.HandleFunc("GET "+api.PathAdminEIPs, func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(svc.ListEIPs(r.Context()))
	})
	m.HandleFunc("POST "+api.PathAdminEIPs, func(w http.ResponseWriter, r *http.Request) {
		var req api.EIPCreate
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.CreateEIP(r.Context(), req))
		}
	})
	m.HandleFunc("GET "+api.PathAdminGroups, func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(svc.ListGroups(r.Context()))
	})
	m.HandleFunc("POST "+api.PathAdminGroups, func(w http.ResponseWriter, r *http.Request) {
		var req api.GroupCreate
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.CreateGroup(r.Context(), req))
		}
	})
	m.HandleFunc("GET "+api.PathAdminGroup+"{group}", func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r)(svc.ShowGroup(r.Context(), r.PathValue("group")))
	})
	m.HandleFunc("DELETE "+api.PathAdminGroup+"{group}", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.DeleteGroup(r.Context(), r.PathValue("group")); err != nil {
			a.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("POST "+api.PathAdminGroup+"{group}/{action}", a.action)
	return a
}

func (a *AdminAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *AdminAPI) action(w http.ResponseWriter, r *http.Request) {
	ctx, group, svc := r.Context(), r.PathValue("group"), a.svc
	switch r.PathValue("action") {
	case api.ActionJoin, api.ActionLeave:
		var req api.GroupMembers
		if !a.decode(w, r, &req) {
			return
		}
		if r.PathValue("action") == api.ActionJoin {
			a.answer(w, r)(svc.Join(ctx, group, req.Guests))
		} else {
			a.answer(w, r)(svc.Leave(ctx, group, req.Guests))
		}
	case api.ActionAttachNetwork:
		var req api.AttachNetwork
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.AttachNetwork(ctx, group, req))
		}
	case api.ActionDetachNetwork:
		var req api.DetachNetwork
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.DetachNetwork(ctx, group, req))
		}
	case api.ActionCreateEIP:
		var req api.CreateGroupEIP
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.CreateGroupEIP(ctx, group, req))
		}
	case api.ActionAssociateEIP:
		var req api.AssociateEIP
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.AssociateEIP(ctx, group, req))
		}
	case api.ActionDissociateEIP:
		var req api.DissociateEIP
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.DissociateEIP(ctx, group))
		}
	case api.ActionChangeEIPBandwidth:
		var req api.ChangeEIPBandwidth
		if a.decode(w, r, &req) {
			if req.Bandwidth == nil {
				a.fail(w, r, inventory.Invalid("bandwidth", "missing: the bandwidth in Mbit/s, 0 for unlimited"))
				return
			}
			a.answer(w, r)(svc.ChangeEIPBandwidth(ctx, group, *req.Bandwidth))
		}
	case api.ActionUpdate:
		var req api.GroupUpdate
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.UpdateGroup(ctx, group, req))
		}
	case api.ActionSetPriority:
		var req api.PriorityUpdate
		if a.decode(w, r, &req) {
			a.answer(w, r)(svc.SetPriority(ctx, group, req.Member, req.Priority))
		}
	default:
		a.fail(w, r, fmt.Errorf("%w: no group action %q", inventory.ErrNotFound, r.PathValue("action")))
	}
}

// decode reads the body strictly into v; on failure it answers 400 (415
// for a body not declared application/json) and returns false. An empty
// body is an empty object.
func (a *AdminAPI) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodySize))
	if err != nil {
		a.fail(w, r, inventory.Invalid("", "read body: %v", err))
		return false
	}
	if len(data) == 0 {
		data = []byte("{}")
	} else if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		a.fail(w, r, fmt.Errorf("%w: Content-Type %q: send the request as application/json", ErrUnsupportedMediaType, r.Header.Get("Content-Type")))
		return false
	}
	if err := decodeStrict(data, v); err != nil {
		a.fail(w, r, err)
		return false
	}
	return true
}

// answer writes v as JSON, or the error.
func (a *AdminAPI) answer(w http.ResponseWriter, r *http.Request) func(v any, err error) {
	return func(v any, err error) {
		if err != nil {
			a.fail(w, r, err)
			return
		}
		daemon.WriteJSON(w, http.StatusOK, v)
	}
}

func (a *AdminAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, body := errorBody(err)
	if code == http.StatusInternalServerError {
		a.log.Error("admin api", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		a.log.Info("admin api refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	daemon.WriteJSON(w, code, body)
}

// ListenAdmin listens on the unix socket path for the admin API: the parent
// directory is created 0700 when missing, a stale socket is replaced, the
// socket is made 0600 (daemon.ListenUnix). A socket another process
// answers on (daemon.ErrSocketInUse) or anything else at path
// (daemon.ErrNotSocket) is an error.
func ListenAdmin(path string) (net.Listener, error) {
	ln, err := daemon.ListenUnix(path, 0o700)
	if err != nil {
		return nil, fmt.Errorf("hostsync: admin socket: %w", err)
	}
	return ln, nil
}

type peerKey struct{}

// PeerContext stores the unix peer's uid in the connection's context; use
// it as http.Server.ConnContext for the admin socket.
func PeerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred.Uid)
}

// RequireRoot refuses (403) admin requests whose unix peer is neither
// root nor this process's user; the 0600 socket already keeps others out,
// this holds even if its mode is loosened.
func RequireRoot(h http.Handler) http.Handler {
	self := uint32(os.Geteuid())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := r.Context().Value(peerKey{}).(uint32)
		if !ok || (uid != 0 && uid != self) {
			daemon.WriteJSON(w, http.StatusForbidden, api.Error{Error: "hostsync: the admin API is for root only"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
