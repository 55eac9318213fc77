package insightsapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/promreg"
)

// The access a caller needs in a namespace: list deliveries.delauto.io.
const (
	AccessVerb     = "list"
	AccessResource = "deliveries"
)

// DeliveryReaderRules are the RBAC rules of a Role that lets its subjects
// read the insights of the Role's namespace.
var DeliveryReaderRules = []rbacv1.PolicyRule{{APIGroups: []string{v1.GroupVersion.Group}, Resources: []string{AccessResource}, Verbs: []string{AccessVerb}}}

// AuthOptions tune KubeAuth.
type AuthOptions struct {
	// TTL is how long a TokenReview or SubjectAccessReview answer is
	// reused (default 10 s).
	TTL time.Duration
	// MaxEntries bounds each of the two caches (default 10,000).
	MaxEntries int
	// Audiences, if set, are the audiences a token must be valid for.
	Audiences []string
	// Registerer gets the caches' hit and miss counters (nil: none).
	Registerer prometheus.Registerer
}

// Defaults of AuthOptions.
const (
	DefaultAuthTTL        = 10 * time.Second
	DefaultAuthMaxEntries = 10000
)

// KubeAuth is the Authorizer of a cluster: a TokenReview authenticates the
// token, a SubjectAccessReview asks whether its user may list
// deliveries.delauto.io in the namespace. Answers, refusals included, are
// kept for the TTL under a SHA-256 of the token (the token itself is never
// kept nor logged); failures to ask are not kept.
type KubeAuth struct {
	client    kubernetes.Interface
	audiences []string
	tokens    *ttlCache[*authnv1.TokenReviewStatus]
	access    *ttlCache[bool]
	flight    singleflight.Group
	lookups   *prometheus.CounterVec
}

// NewKubeAuth makes a KubeAuth asking the apiserver of c.
func NewKubeAuth(c kubernetes.Interface, o AuthOptions) (*KubeAuth, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultAuthTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultAuthMaxEntries
	}
	a := &KubeAuth{client: c, audiences: o.Audiences,
		tokens: newTTLCache[*authnv1.TokenReviewStatus](o.TTL, o.MaxEntries),
		access: newTTLCache[bool](o.TTL, o.MaxEntries),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_api_auth_cache_requests_total",
			Help: "Token and access checks of the insights API by review (tokenreview, subjectaccessreview) and whether the in-process cache held the answer (result: hit or miss)."},
			[]string{"review", "result"}),
	}
	if o.Registerer != nil {
		var err error
		if a.lookups, err = promreg.Register(o.Registerer, a.lookups); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// tokenHash is what the caches key a token by.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authorize implements Authorizer.
func (a *KubeAuth) Authorize(ctx context.Context, token, namespace string) (string, error) {
	h := tokenHash(token)
	st, err := a.review(ctx, h, token)
	if err != nil {
		return "", err
	}
	if !st.Authenticated {
		return "", &Error{Code: http.StatusUnauthorized, Reason: ReasonUnauthorized, Message: "the Kubernetes API does not accept this token"}
	}
	user := st.User.Username
	ok, err := a.allowed(ctx, h, namespace, st.User)
	if err != nil {
		return user, err
	}
	if !ok {
		return user, &Error{Code: http.StatusForbidden, Reason: ReasonForbidden,
			Message: fmt.Sprintf("%s may not %s %s.%s in namespace %s", user, AccessVerb, AccessResource, v1.GroupVersion.Group, namespace)}
	}
	return user, nil
}

func (a *KubeAuth) review(ctx context.Context, h, token string) (*authnv1.TokenReviewStatus, error) {
	if st, ok := a.tokens.get(h); ok {
		a.lookups.WithLabelValues("tokenreview", cacheHit).Inc()
		return st, nil
	}
	a.lookups.WithLabelValues("tokenreview", cacheMiss).Inc()
	v, err, _ := a.flight.Do("t"+h, func() (any, error) {
		tr, err := a.client.AuthenticationV1().TokenReviews().Create(context.WithoutCancel(ctx), &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("TokenReview: %w", err)
		}
		st := tr.Status
		if st.Authenticated && len(a.audiences) > 0 && !intersects(st.Audiences, a.audiences) {
			st.Authenticated = false
		}
		a.tokens.put(h, &st)
		return &st, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*authnv1.TokenReviewStatus), nil
}

func (a *KubeAuth) allowed(ctx context.Context, h, namespace string, u authnv1.UserInfo) (bool, error) {
	key := h + "/" + namespace
	if ok, hit := a.access.get(key); hit {
		a.lookups.WithLabelValues("subjectaccessreview", cacheHit).Inc()
		return ok, nil
	}
	a.lookups.WithLabelValues("subjectaccessreview", cacheMiss).Inc()
	v, err, _ := a.flight.Do("a"+key, func() (any, error) {
		extra := map[string]authzv1.ExtraValue{}
		for k, v := range u.Extra {
			extra[k] = authzv1.ExtraValue(v)
		}
		sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(context.WithoutCancel(ctx), &authzv1.SubjectAccessReview{
			Spec: authzv1.SubjectAccessReviewSpec{
				User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
				ResourceAttributes: &authzv1.ResourceAttributes{
					Namespace: namespace, Verb: AccessVerb, Group: v1.GroupVersion.Group, Resource: AccessResource,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("SubjectAccessReview: %w", err)
		}
		a.access.put(key, sar.Status.Allowed)
		return sar.Status.Allowed, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// ttlCache is a map whose entries expire after ttl, holding at most max:
// when full, expired entries go first, then arbitrary ones.
type ttlCache[V any] struct {
	mu  sync.Mutex
	m   map[string]ttlEntry[V]
	ttl time.Duration
	max int
	now func() time.Time
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](ttl time.Duration, max int) *ttlCache[V] {
	return &ttlCache[V]{m: map[string]ttlEntry[V]{}, ttl: ttl, max: max, now: time.Now}
}

func (c *ttlCache[V]) get(k string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(k string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		// Still full: drop an eighth, whichever the map yields first.
		for k := range c.m {
			if len(c.m) < c.max-c.max/8 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = ttlEntry[V]{v: v, expires: now.Add(c.ttl)}
}

// len is the number of entries, expired ones included.
func (c *ttlCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
