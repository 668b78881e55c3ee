// The restaurant-order example: charge the card, wait for the restaurant to accept (or refund
// after a timeout), hand the order to a courier child workflow, wait a day, ask for feedback.
import { event, task, workflow } from "../index.js";
import { days, minutes } from "./clock.js";
import { progress } from "./subscription.js";

const chargeCard = task({
  name: "charge-card",
  retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 50 },
  async handler(input: { orderId: string }, context) {
    // The payment provider is flaky: the first attempt of every order times out.
    if (context.attempt === 1) throw new Error("payment gateway timeout");
    progress(`${input.orderId}: card charged (attempt ${context.attempt}, idempotency key ${context.idempotencyKey.slice(-16)})`);
    return { chargeId: `ch_${input.orderId}` };
  },
});

const refund = task({
  name: "refund",
  async handler(input: { orderId: string }) {
    progress(`${input.orderId}: restaurant never accepted, card refunded`);
    return { refunded: true };
  },
});

const pickUp = task({
  name: "pick-up",
  async handler(input: { orderId: string }) {
    progress(`${input.orderId}: courier picked up the food`);
  },
});

const dropOff = task({
  name: "drop-off",
  async handler(input: { orderId: string }) {
    progress(`${input.orderId}: courier delivered`);
    return { deliveredBy: "courier-7" };
  },
});

const sendFeedbackEmail = task({
  name: "send-feedback-email",
  async handler(input: { orderId: string }) {
    progress(`${input.orderId}: feedback email sent`);
  },
});

export const deliveryV1 = workflow({ name: "delivery" }).v("1.0.0", {
  async handler(run, input: { orderId: string }) {
    await pickUp.start(run, input);
    await run.sleep("ride", minutes(3));
    return dropOff.start(run, input);
  },
});

export const orderV1 = workflow({ name: "order" }).v("1.0.0", {
  events: { accepted: event<{ eta: number }>() },
  async handler(run, input: { orderId: string }) {
    await chargeCard.start(run, input);
    const accepted = await run.events.accepted.wait({ timeout: minutes(5) });
    if (accepted.timeout) {
      await refund.start(run, input);
      return { status: "cancelled" };
    }
    run.logger.info(`restaurant accepted, eta ${accepted.data.eta} min`);
    const child = await deliveryV1.startAsChild(run, input);
    const delivered = await child.waitForStatus("completed");
    if (!delivered.success) return { status: "delivery-failed" };
    await run.sleep("feedback-delay", days(1));
    await sendFeedbackEmail.start(run, input);
    return { status: "completed", deliveredBy: delivered.state.output.deliveredBy };
  },
});
