/*
Copyright 2026 The DelAuto Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeliveryPhase is where a delivery's calling stands, for humans.
// +kubebuilder:validation:Enum=Pending;Scheduled;Calling;Confirmed;RescheduleRequested;InstructionsRecorded;Unreachable;OptedOut;Cancelled;Failed
type DeliveryPhase string

// The phases of a Delivery.
const (
	// DeliveryPending: accepted, no call planned yet (campaign not resolved or not ready).
	DeliveryPending DeliveryPhase = "Pending"
	// DeliveryScheduled: an attempt is planned at status.nextCallTime.
	DeliveryScheduled DeliveryPhase = "Scheduled"
	// DeliveryCalling: a call is being placed or is in progress.
	DeliveryCalling DeliveryPhase = "Calling"
	// DeliveryConfirmed: the recipient confirmed they will be there.
	DeliveryConfirmed DeliveryPhase = "Confirmed"
	// DeliveryRescheduleRequested: the recipient asked for another time; the agent was told.
	DeliveryRescheduleRequested DeliveryPhase = "RescheduleRequested"
	// DeliveryInstructionsRecorded: the recipient left instructions; the agent was told.
	DeliveryInstructionsRecorded DeliveryPhase = "InstructionsRecorded"
	// DeliveryUnreachable: no call reached a decision. Either every allowed
	// attempt ended with a result the campaign retries (no-answer, busy, ...)
	// or a call ended that is not retried: above all an answered call in
	// which the recipient hung up or said nothing (result completed, never
	// retried: they heard the message), after a single attempt.
	DeliveryUnreachable DeliveryPhase = "Unreachable"
	// DeliveryOptedOut: the number asked not to be called again.
	DeliveryOptedOut DeliveryPhase = "OptedOut"
	// DeliveryCancelled: spec.cancelled was set; no more calls.
	DeliveryCancelled DeliveryPhase = "Cancelled"
	// DeliveryFailed: calling is impossible (for example a number Twilio rejects).
	DeliveryFailed DeliveryPhase = "Failed"
)

// Finished reports whether no more calls will be made in this phase.
func (p DeliveryPhase) Finished() bool {
	switch p {
	case DeliveryConfirmed, DeliveryRescheduleRequested, DeliveryInstructionsRecorded,
		DeliveryUnreachable, DeliveryOptedOut, DeliveryCancelled, DeliveryFailed:
		return true
	}
	return false
}

// CallResult is how one call attempt ended.
// +kubebuilder:validation:Enum=completed;no-answer;busy;failed;canceled;machine;rejected;unknown
type CallResult string

// The results of a call attempt.
const (
	// CallCompleted: the call was answered by a person and ended.
	CallCompleted CallResult = "completed"
	// CallNoAnswer: it rang until the ring timeout.
	CallNoAnswer CallResult = "no-answer"
	// CallBusy: the line was busy.
	CallBusy CallResult = "busy"
	// CallFailed: the carrier could not connect the call.
	CallFailed CallResult = "failed"
	// CallCanceled: the call was canceled before it was answered.
	CallCanceled CallResult = "canceled"
	// CallMachine: an answering machine or fax answered.
	CallMachine CallResult = "machine"
	// CallRejected: Twilio refused the number permanently (bad or unreachable number).
	CallRejected CallResult = "rejected"
	// CallUnknown: the dial was ambiguous and is being reconciled.
	CallUnknown CallResult = "unknown"
)

// ResponseChoice is what the recipient chose in the call menu.
// +kubebuilder:validation:Enum=Confirm;Reschedule;Instructions;OptOut;None
type ResponseChoice string

// The recipient's choices.
const (
	ChoiceConfirm      ResponseChoice = "Confirm"
	ChoiceReschedule   ResponseChoice = "Reschedule"
	ChoiceInstructions ResponseChoice = "Instructions"
	ChoiceOptOut       ResponseChoice = "OptOut"
	ChoiceNone         ResponseChoice = "None"
)

// Recipient is the person DelAuto phones.
type Recipient struct {
	// name is how the greeting addresses the recipient.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	Name string `json:"name"`

	// phone is the recipient's number in E.164 form, for example +14155550123.
	// +required
	Phone PhoneNumber `json:"phone"`

	// timeZone is the recipient's IANA time zone (for example Europe/Berlin);
	// calling hours apply in it. Empty means the campaign's default time zone.
	// +optional
	TimeZone TimeZone `json:"timeZone,omitempty"`

	// language is the BCP 47 tag of the language the call is held in, for
	// example de or en-GB. Empty means the campaign's default language; a
	// language the campaign has no wording for falls back to it too, and the
	// Delivery's LanguageSupported condition says so.
	// +optional
	// +kubebuilder:validation:MaxLength=35
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$')",message="language must be a BCP 47 tag such as en, de or en-GB"
	Language string `json:"language,omitempty"`
}

// Address is where the parcel goes; it is told to the agent.
type Address struct {
	// line1 is the street and number.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	Line1 string `json:"line1"`
	// line2 is the flat, floor or building.
	// +optional
	// +kubebuilder:validation:MaxLength=200
	Line2 string `json:"line2,omitempty"`
	// city is the town or city.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	City string `json:"city"`
	// postalCode is the postal or ZIP code.
	// +optional
	// +kubebuilder:validation:MaxLength=20
	PostalCode string `json:"postalCode,omitempty"`
	// country is the ISO 3166-1 alpha-2 code, for example DE or US.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Z]{2}$')",message="country must be an ISO 3166-1 alpha-2 code in capitals, such as DE or US"
	// +kubebuilder:validation:MaxLength=2
	Country string `json:"country,omitempty"`
}

// DeliveryWindow is the promised delivery window.
// +kubebuilder:validation:XValidation:rule="self.end > self.start",message="window.end must be after window.start"
type DeliveryWindow struct {
	// start is when the delivery window opens (RFC 3339).
	// +required
	Start metav1.Time `json:"start"`
	// end is when the delivery window closes (RFC 3339); no call is placed after it.
	// +required
	End metav1.Time `json:"end"`
}

// Agent is the delivery agent who is told the recipient's answer.
type Agent struct {
	// name of the agent or the route.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	Name string `json:"name"`
	// phone receives the relay SMS, in E.164 form. Empty: no SMS, only the
	// campaign's relay webhook.
	// +optional
	Phone PhoneNumber `json:"phone,omitempty"`
}

// CampaignReference names a CallCampaign in the Delivery's namespace.
type CampaignReference struct {
	// name of the CallCampaign.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// DeliverySpec is the parcel to announce and whom to tell.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancelled) || !oldSelf.cancelled || (has(self.cancelled) && self.cancelled)",message="cancelled cannot be unset: create a new Delivery instead"
type DeliverySpec struct {
	// recipient is the person to call.
	// +required
	Recipient Recipient `json:"recipient"`

	// address is the delivery address, relayed to the agent.
	// +required
	Address Address `json:"address"`

	// region is the delivery region; campaigns sharded by region route the
	// delivery to the shard of this name.
	// +optional
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$')",message="region must be lower-case letters, digits and '-', starting and ending with a letter or digit"
	Region string `json:"region,omitempty"`

	// window is the promised delivery window.
	// +required
	Window DeliveryWindow `json:"window"`

	// agent is who is told the answer.
	// +required
	Agent Agent `json:"agent"`

	// campaignRef names the CallCampaign that calls this delivery. Empty: the
	// campaign whose deliverySelector matches the delivery's labels.
	// +optional
	CampaignRef *CampaignReference `json:"campaignRef,omitempty"`

	// cancelled stops all calls for this delivery; it cannot be unset.
	// +optional
	Cancelled bool `json:"cancelled,omitempty"`
}

// LastAttempt describes the latest call attempt.
type LastAttempt struct {
	// number of the attempt, from 1.
	Number int32 `json:"number"`
	// callSID is Twilio's call SID, once the call was placed.
	// +optional
	CallSID string `json:"callSID,omitempty"`
	// result is how the call ended; empty while it is in progress.
	// +optional
	Result CallResult `json:"result,omitempty"`
	// answeredBy is Twilio's answering-machine detection verdict (human, machine_start, ...).
	// +optional
	AnsweredBy string `json:"answeredBy,omitempty"`
	// duration is how long the call lasted.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// errorCode is Twilio's error code when the dial was refused.
	// +optional
	ErrorCode int32 `json:"errorCode,omitempty"`
	// startTime is when the call was placed.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// endTime is when the call ended.
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`
}

// CustomerResponse is what the recipient answered.
type CustomerResponse struct {
	// choice is the menu option taken.
	Choice ResponseChoice `json:"choice"`
	// digits pressed, when the answer was given by keypad.
	// +optional
	Digits string `json:"digits,omitempty"`
	// speech recognised, when the answer was spoken.
	// +optional
	Speech string `json:"speech,omitempty"`
	// recordingURL is the recorded instructions.
	// +optional
	RecordingURL string `json:"recordingURL,omitempty"`
	// recordingDuration is the length of the recorded instructions.
	// +optional
	RecordingDuration *metav1.Duration `json:"recordingDuration,omitempty"`
	// transcription of the recorded instructions.
	// +optional
	Transcription string `json:"transcription,omitempty"`
	// time the answer was given.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// DeliveryStatus is what DelAuto observed and did.
type DeliveryStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// phase is where calling stands.
	// +optional
	Phase DeliveryPhase `json:"phase,omitempty"`
	// campaign is the CallCampaign calling this delivery.
	// +optional
	Campaign string `json:"campaign,omitempty"`
	// shard is the campaign shard whose workers call this delivery.
	// +optional
	Shard string `json:"shard,omitempty"`
	// attempts is how many call attempts were made.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// nextCallTime is when the next attempt is due.
	// +optional
	NextCallTime *metav1.Time `json:"nextCallTime,omitempty"`
	// lastAttempt is the latest attempt.
	// +optional
	LastAttempt *LastAttempt `json:"lastAttempt,omitempty"`
	// response is the recipient's answer.
	// +optional
	Response *CustomerResponse `json:"response,omitempty"`
	// agentNotifiedTime is when the agent was told the answer.
	// +optional
	AgentNotifiedTime *metav1.Time `json:"agentNotifiedTime,omitempty"`
	// finishedTime is when the delivery reached a final phase; retention counts from it.
	// +optional
	FinishedTime *metav1.Time `json:"finishedTime,omitempty"`
	// conditions: Ready (campaign resolved, calls planned), Degraded, and
	// LanguageSupported (False with reason LanguageFallback when the
	// campaign has no wording in the recipient's language), with reasons.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// ConditionLanguageSupported says whether the campaign speaks the
// recipient's language: True (reason Wording) when it has wording for it or
// the recipient names none, False (reason LanguageFallback) when the call is
// held in the campaign's default language instead.
const ConditionLanguageSupported = "LanguageSupported"

// The reasons of ConditionLanguageSupported.
const (
	ReasonWording          = "Wording"
	ReasonLanguageFallback = "LanguageFallback"
)

// Delivery is a parcel whose recipient DelAuto phones shortly before delivery.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dlv,categories=delauto
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Next Call",type=string,JSONPath=`.status.nextCallTime`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.status.attempts`
// +kubebuilder:printcolumn:name="Campaign",type=string,JSONPath=`.status.campaign`
// +kubebuilder:printcolumn:name="Window Start",type=string,JSONPath=`.spec.window.start`,priority=1
// +kubebuilder:printcolumn:name="Shard",type=string,JSONPath=`.status.shard`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.campaignRef) || !has(oldSelf.status) || !has(oldSelf.status.attempts) || oldSelf.status.attempts == 0 || (has(self.spec.campaignRef) && self.spec.campaignRef.name == oldSelf.spec.campaignRef.name)",message="spec.campaignRef cannot change once calls began"
type Delivery struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the parcel to announce.
	// +required
	Spec DeliverySpec `json:"spec"`
	// status is what DelAuto observed and did.
	// +optional
	Status DeliveryStatus `json:"status,omitempty"`
}

// DeliveryList is a list of Deliveries.
// +kubebuilder:object:root=true
type DeliveryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Delivery `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Delivery{}, &DeliveryList{})
}
