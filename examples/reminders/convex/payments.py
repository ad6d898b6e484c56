"""Payment reminders with the cancellable pattern.

Creating a payment schedules a reminder and stores the job id on the payment.
Paying cancels the reminder. The payment's status shows the reminder job's
state, read from the `_scheduled_functions` system table.
"""

from convexpy import ConvexError, internal, internal_mutation, mutation, query, v


@mutation(args={"customer": v.string(), "amount": v.number(), "dueAt": v.number()})
async def create(ctx, customer, amount, dueAt):
    payment_id = await ctx.db.insert(
        "payments", {"customer": customer, "amount": amount, "dueAt": dueAt, "paid": False}
    )
    reminder = await ctx.scheduler.run_at(
        dueAt, internal.payments.send_reminder, {"paymentId": payment_id}
    )
    await ctx.db.patch(payment_id, {"reminderJob": reminder})
    return payment_id


@mutation(args={"paymentId": v.id("payments")})
async def pay(ctx, paymentId):
    payment = await ctx.db.get(paymentId)
    if payment is None:
        raise ConvexError({"code": "NOT_FOUND", "paymentId": paymentId})
    if payment["paid"]:
        return
    # Pending: it will never run. Already sent: cancel is a no-op.
    await ctx.scheduler.cancel(payment["reminderJob"])
    await ctx.db.patch(paymentId, {"paid": True})


@internal_mutation(args={"paymentId": v.id("payments")})
async def send_reminder(ctx, paymentId):
    payment = await ctx.db.get(paymentId)
    await ctx.db.insert(
        "emails",
        {"to": payment["customer"], "text": f"Your payment of {payment['amount']} is due."},
    )


@query(args={"paymentId": v.id("payments")})
async def status(ctx, paymentId):
    payment = await ctx.db.get(paymentId)
    job = await ctx.db.system.get(payment["reminderJob"])
    return {
        "paid": payment["paid"],
        "reminder": None if job is None else job["state"]["kind"],
    }


@query
async def emails(ctx) -> list:
    return [e["to"] for e in await ctx.db.query("emails").collect()]
