"""Errors as RabbitMQ reports them: codes, texts, and which of channel or connection closes."""
import pika
import pytest


def open_connection(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def channel_error(ch, f):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        f(ch)
    return e.value.reply_code, e.value.reply_text


def connection_error(ch, f):
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        f(ch)
    return e.value.reply_code, e.value.reply_text


def test_queue_errors(connect, name):
    conn = connect()
    conn.channel().queue_declare(name)
    assert channel_error(conn.channel(), lambda c: c.queue_declare(name, durable=True)) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': received 'true' but current is 'false'")
    assert channel_error(conn.channel(), lambda c: c.queue_declare(name, arguments={"x-max-length": 5})) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost '/': received the value '5' of type 'signedint' but current is none")
    assert channel_error(conn.channel(), lambda c: c.queue_declare("amq.foo")) == (
        403, "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'")
    assert channel_error(conn.channel(), lambda c: c.basic_get(f"{name}-missing")) == (
        404, f"NOT_FOUND - no queue '{name}-missing' in vhost '/'")
    exclusive = conn.channel().queue_declare("", exclusive=True).method.queue
    other = connect()
    code, text = channel_error(other.channel(), lambda c: c.queue_declare(exclusive, passive=True))
    assert code == 405 and text.startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{exclusive}'")
    conn.channel().queue_delete(name)
    conn.close()
    assert channel_error(other.channel(), lambda c: c.queue_declare(exclusive, passive=True))[0] == 404
    other.close()


def test_exchange_errors(connect, name):
    conn = connect()
    assert channel_error(conn.channel(), lambda c: c.exchange_declare("amq.foo", "direct")) == (
        403, "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'")
    conn.channel().exchange_declare(name, "direct")
    assert channel_error(conn.channel(), lambda c: c.exchange_declare(name, "fanout")) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': received 'fanout' but current is 'direct'")
    assert channel_error(conn.channel(), lambda c: c.exchange_declare(f"{name}-no", "direct", passive=True)) == (
        404, f"NOT_FOUND - no exchange '{name}-no' in vhost '/'")
    assert channel_error(conn.channel(), lambda c: c.exchange_delete("")) == (
        403, "ACCESS_REFUSED - operation not permitted on the default exchange")
    ch = conn.channel()
    ch.queue_declare(name, exclusive=True)
    ch.queue_bind(name, name, "k")
    assert channel_error(ch, lambda c: c.exchange_delete(name, if_unused=True)) == (
        406, f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use")
    assert connection_error(conn.channel(), lambda c: c.exchange_declare(f"{name}-t", "nope")) == (
        503, "COMMAND_INVALID - unknown exchange type 'nope'")
    conn = connect()
    conn.channel().exchange_delete(name)
    conn.close()


def test_basic_and_channel_errors(connect, name):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(name, auto_delete=False)
    assert channel_error(ch, lambda c: (c.basic_ack(99), c.queue_declare(name, passive=True))) == (
        406, "PRECONDITION_FAILED - unknown delivery tag 99")
    ch = conn.channel()
    ch.basic_consume(name, lambda *a: None, consumer_tag="ct")
    with pytest.raises(pika.exceptions.DuplicateConsumerTag):
        ch.basic_consume(name, lambda *a: None, consumer_tag="ct")
    other = connect()
    assert channel_error(other.channel(), lambda c: c.basic_consume(name, lambda *a: None, exclusive=True)) == (
        403, f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use")
    ch = conn.channel()
    ch.confirm_delivery()
    assert channel_error(ch, lambda c: c.tx_select()) == (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
    assert channel_error(conn.channel(), lambda c: c.tx_commit()) == (406, "PRECONDITION_FAILED - channel is not transactional")
    assert channel_error(conn.channel(), lambda c: c.basic_consume("amq.rabbitmq.reply-to", lambda *a: None)) == (
        406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
    assert channel_error(conn.channel(), lambda c: (
        c.basic_publish("", name, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")),
        c.queue_declare(name, passive=True))) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")
    conn.channel().queue_delete(name)
    assert connection_error(conn.channel(), lambda c: c.basic_qos(prefetch_size=10)) == (
        540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)")
    conn = connect()
    assert connection_error(conn.channel(), lambda c: c.flow(False)) == (540, "NOT_IMPLEMENTED - active=false")
    conn = connect()
    assert connection_error(conn.channel(), lambda c: c.basic_recover(requeue=False)) == (
        540, "NOT_IMPLEMENTED - requeue=false")
    other.close()


def test_login_and_vhost_errors(node_url):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        open_connection(node_url().replace("guest:guest", "guest:wrong"))
    assert "403" in str(e.value) and "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(e.value)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        open_connection(node_url().rstrip("/") + "/nope")
    assert "NOT_ALLOWED - vhost nope not found" in str(e.value)


def test_a_failing_client_does_not_disturb_others(connect, name):
    healthy = connect()
    hch = healthy.channel()
    hch.queue_declare(name, exclusive=True)
    for _ in range(20):
        broken = connect()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            broken.channel().exchange_declare(f"{name}-x", "bogus")
    hch.basic_publish("", name, b"still here")
    method, _, body = hch.basic_get(name, auto_ack=True)
    assert body == b"still here"
    healthy.close()
