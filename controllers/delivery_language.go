package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/language"
)

// languageCondition says whether campaign c speaks d's recipient's
// language, or holds the call in its default language instead.
func languageCondition(d *v1.Delivery, c *v1.CallCampaign) (metav1.Condition, language.Resolution) {
	res := language.Resolve(&c.Spec.Script, d.Spec.Recipient.Language)
	cond := metav1.Condition{Type: v1.ConditionLanguageSupported, Status: metav1.ConditionTrue, Reason: v1.ReasonWording,
		ObservedGeneration: d.Generation}
	switch {
	case res.Fallback:
		cond.Status, cond.Reason = metav1.ConditionFalse, v1.ReasonLanguageFallback
		cond.Message = fmt.Sprintf("campaign %s has no wording in %s (built in: %v; add it to spec.script.languages); calls are held in its default language %s",
			c.Name, res.Requested, language.Codes(), res.Used)
	case res.Requested == "":
		cond.Message = fmt.Sprintf("the recipient names no language; calls are held in the campaign's default language %s", res.Used)
	default:
		cond.Message = fmt.Sprintf("calls are held in %s (speech %s)", res.Used, res.SpeechLanguage)
	}
	return cond, res
}

// stampLanguage sets d's LanguageSupported condition for campaign c and
// counts a fallback when it starts.
func (r *DeliveryReconciler) stampLanguage(d *v1.Delivery, c *v1.CallCampaign) {
	cond, res := languageCondition(d, c)
	was := meta.FindStatusCondition(d.Status.Conditions, v1.ConditionLanguageSupported)
	if res.Fallback && (was == nil || was.Reason != v1.ReasonLanguageFallback) {
		r.Metrics.languageFallback(language.Base(res.Requested), language.Base(res.Used))
	}
	setCondition(&d.Status.Conditions, cond)
}
